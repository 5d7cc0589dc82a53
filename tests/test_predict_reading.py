"""The one reading path (digitlab.predict.reading): many inputs, one model call for the digits, one Outcome
per input, one wording of an input's error, the same for the CLI, the REST API and batch. Stand-in models:
no training."""

import errno

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab.errors import DigitlabError, RunError
from digitlab.predict import Predictor
from digitlab.predict.reading import DIGIT, choose_method, input_error, kind, predict_files, read_files, read_inputs
from digitlab.predict.results import Outcome, Prediction, Reading

NAMES = tuple(str(i) for i in range(10))
BLANK = 10  # a line model's last class


def counting(forward):
    """`forward`, counting its calls in `.calls`."""

    def call(x):
        call.calls += 1
        return forward(x)

    call.calls = 0
    return call


def digit_predictor() -> Predictor:
    """A stand-in single-digit model: every image is a 3, at 0.9."""
    probs = np.full(10, 0.1 / 9, np.float32)
    probs[3] = 0.9
    return Predictor(counting(lambda x: np.repeat(probs[None], len(x), 0)), (28, 28), NAMES, threshold=0.5)


def line_predictor() -> Predictor:
    """A stand-in line model that reads "17" in any line: a 1 at frame 2, a 7 at frame 40, blank elsewhere."""
    frames = np.full((1, 64, 11), 0.05 / 10, np.float32)
    classes = [BLANK] * 64
    classes[2], classes[40] = 1, 7
    for t, c in enumerate(classes):
        frames[0, t, c] = 0.95
    return Predictor(counting(lambda x: np.repeat(frames, len(x), 0)), (32, 256), NAMES, threshold=0.01)


def seven(path):
    """A black 7 on white, drawn as a person would."""
    img = Image.new("L", (140, 140), 255)
    ImageDraw.Draw(img).line([(35, 30), (105, 30), (60, 115)], fill=0, width=9)
    img.save(path)
    return path


def bars(path):
    """Two dark bars on light paper: a line of two digits."""
    img = Image.new("L", (170, 60), 230)
    ImageDraw.Draw(img).rectangle((10, 10, 13, 49), fill=20)
    ImageDraw.Draw(img).rectangle((150, 10, 153, 49), fill=20)
    img.save(path)
    return path


@pytest.fixture
def files(tmp_path):
    """A good image, a file that is not an image, a missing file, another good image."""
    broken = tmp_path / "broken.png"
    broken.write_text("not a PNG")
    return [seven(tmp_path / "a.png"), broken, tmp_path / "missing.png", seven(tmp_path / "b.png")]


def test_a_bad_file_among_good_ones_is_one_error_and_the_digits_are_one_model_call(files):
    predictor = digit_predictor()
    outcomes = read_inputs(predictor, files, [str(f) for f in files], DIGIT)
    assert [o.name for o in outcomes] == [str(f) for f in files]
    good, broken, missing, other = outcomes
    for o in (good, other):
        assert isinstance(o.result, Prediction) and o.error is None
        assert (o.result.digit, o.result.label, o.result.unsure) == (3, "3", False)
        assert o.result.confidence == pytest.approx(0.9, abs=1e-6) and o.result.image.shape == (28, 28)
    assert broken.result is None and broken.error.startswith(f"{files[1]}: not an image")
    assert missing.result is None and missing.error == f"{files[2]}: no such file"
    assert predictor.forward.calls == 1  # both good files in one call


def test_a_bad_file_in_a_line_run_is_one_error_and_the_others_are_read(files, tmp_path):
    predictor = line_predictor()
    paths = [bars(tmp_path / "a.png"), files[1], bars(tmp_path / "b.png")]
    outcomes = read_inputs(predictor, paths, [str(p) for p in paths], "line")
    first, broken, last = outcomes
    for o in (first, last):
        assert isinstance(o.result, Reading) and o.result.text == "17" and o.result.size == (170, 60)
    assert broken.result is None and broken.error.startswith(f"{paths[1]}: not an image")
    # The same file, as the digit path words it: one wording for every method.
    (digit_error,) = read_inputs(digit_predictor(), [files[1]], [str(files[1])], DIGIT)
    assert digit_error.error == broken.error


def test_the_cli_rows_keep_their_form(files, tmp_path):
    predictor = digit_predictor()
    rows = predict_files(predictor, files, debug_dir=tmp_path / "debug")
    assert rows[0].keys() == {
        "file",
        "digit",
        "label",
        "confidence",
        "probabilities",
        "top3",
        "unsure",
        "reason",
        "debug",
    }
    assert rows[1] == {"file": str(files[1]), "error": rows[1]["error"]} and "not an image" in rows[1]["error"]
    assert (tmp_path / "debug" / "0000-a.png").is_file() and not (tmp_path / "debug" / "0001-broken.png").exists()
    lines = read_files(line_predictor(), [bars(tmp_path / "n.png"), files[1]])
    assert lines[0]["file"] == str(tmp_path / "n.png") and lines[0]["text"] == "17"
    assert lines[0].keys() == {"file", "text", "lines", "confidence", "unsure", "reason", "digits"}
    assert lines[1].keys() == {"file", "error"}


def test_an_error_found_before_stands_for_its_input_and_the_rest_go_on(tmp_path):
    predictor = digit_predictor()
    grid = np.zeros((28, 28), np.float32)
    grid[5:20, 10:14] = 255
    inputs = [DigitlabError("images[0]: not valid base64"), grid, np.zeros((28, 28), np.float32)]
    bad, ink, blank = read_inputs(predictor, inputs, ["images[0]", "images[1]", "images[2]"], DIGIT)
    assert isinstance(bad, Outcome) and (bad.name, bad.result, bad.error) == (
        "images[0]",
        None,
        "images[0]: not valid base64",
    )
    assert ink.result.digit == 3 and ink.result.image is not None
    assert blank.result.confidence is None and blank.result.reason == "no ink found in the image"


@pytest.mark.parametrize(
    "error, wording",
    [
        (DigitlabError("x.png: no such file"), "x.png: no such file"),  # names the input already
        (DigitlabError("image bytes (9 bytes): not an image"), "x.png: image bytes (9 bytes): not an image"),
        (DigitlabError("x.png[2]: bad"), "x.png[2]: bad"),  # a field's part
        (OSError(errno.EACCES, "Permission denied"), "x.png: cannot be read (Permission denied)"),
        (ValueError("odd chunk"), "x.png: cannot be read (ValueError: odd chunk)"),
    ],
)
def test_one_wording_of_an_inputs_error(error, wording):
    assert input_error("x.png", error) == wording


def test_the_method_is_chosen_once_from_the_runs_kind():
    digits, line = digit_predictor(), line_predictor()
    assert (kind(digits), kind(line)) == ("digit", "line")
    assert (choose_method(digits, None), choose_method(line, None)) == ("segment", "line")
    with pytest.raises(DigitlabError, match="--method line: the run holds a single-digit model"):
        choose_method(digits, "line")
    with pytest.raises(DigitlabError, match=r"--method: expected one of segment, line, combined, got 'lines'"):
        choose_method(line, "lines")
    with pytest.raises(DigitlabError, match="holds a line model, which reads whole lines"):
        read_inputs(line, [], [], DIGIT)
    with pytest.raises(DigitlabError, match="method: expected one of digit, segment, line, combined, got 'number'"):
        read_inputs(digits, [], [], "number")
    with pytest.raises(RunError, match=r"shape \(10, 10\); expected 28x28 digits"):
        kind(Predictor(lambda x: x, (10, 10), NAMES))


def test_the_kind_is_the_runs_config_and_its_model_must_take_that_input(synthetic_mlp_run):
    from digitlab.predict import load_predictor

    assert load_predictor(synthetic_mlp_run).kind == "digit" and kind(load_predictor(synthetic_mlp_run)) == "digit"
    with pytest.raises(RunError, match=r"shape \(28, 28\); expected 28x28 digits .* or 32x256 lines"):
        kind(Predictor(lambda x: x, (28, 28), NAMES, kind="line"))


def test_predict_image_takes_a_path_a_pil_image_a_photo_array_or_a_digit(tmp_path):
    from digitlab.predict.reading import predict_image

    predictor = digit_predictor()
    path = seven(tmp_path / "seven.png")
    photo = np.asarray(Image.open(path))
    for image in (path, str(path), Image.open(path), photo, path.read_bytes()):
        answer = predict_image(predictor, image)
        assert answer.digit == 3 and answer.to_dict()["confidence"] == pytest.approx(0.9)
        assert answer.image.shape == (28, 28) and answer.image.max() > 0  # preprocessed as a file is
    grid = np.zeros((28, 28), np.uint8)
    grid[5:20, 12:15] = 255
    assert np.array_equal(predict_image(predictor, grid).image, grid)  # a 28x28 digit is used as it is
    blank = predict_image(predictor, np.full((80, 80), 240, np.uint8))
    assert blank.digit is None and blank.unsure and blank.reason.startswith("no ink")
    with pytest.raises(DigitlabError, match=r"missing\.png: "):
        predict_image(predictor, tmp_path / "missing.png")
    with pytest.raises(DigitlabError, match="line model"):
        predict_image(line_predictor(), path)


def test_load_reader_predicts_and_reads_as_the_cli_does(synthetic_mlp_run, tmp_path):
    from digitlab import load_reader
    from digitlab.predict import load_predictor

    reader = load_reader(synthetic_mlp_run)
    assert isinstance(reader, Predictor) and reader.run_dir == synthetic_mlp_run
    path, number = seven(tmp_path / "seven.png"), bars(tmp_path / "bars.png")
    predicted = predict_files(load_predictor(synthetic_mlp_run), [path])[0]  # `digitlab predict --json`'s row
    assert {"file": str(path), **reader.predict(path).to_dict()} == predicted
    read_row = read_files(load_predictor(synthetic_mlp_run), [number])[0]  # `digitlab read --json`'s row
    assert {"file": str(number), **reader.read(number).to_dict()} == read_row
    assert reader.predict_proba(np.zeros((2, 28, 28))).shape == (2, 10)
    with pytest.raises(DigitlabError, match=r"--method: expected one of segment, line"):
        reader.read(number, method="ocr")


def test_predict_image_refuses_a_stack_of_images_in_one_line():
    from digitlab.predict.reading import predict_image

    with pytest.raises(DigitlabError, match=r"the image: expected one image, .* got an array of shape \(3, 28, 28\)"):
        predict_image(digit_predictor(), np.zeros((3, 28, 28), np.uint8))


def test_predict_proba_takes_what_preprocess_returns(synthetic_mlp_run):
    """The newcomer's first guess, `predict_proba(preprocess("x.png"))`, answers as the pixel grid does."""
    from digitlab.predict import load_predictor
    from digitlab.preprocess import preprocess

    predictor = load_predictor(synthetic_mlp_run)
    grid = np.zeros((28, 28), np.uint8)
    grid[5:8, 8:20] = grid[8:24, 16:19] = 230
    pre = preprocess(grid)
    one = predictor.predict_proba(pre)
    assert one.shape == (1, 10)
    np.testing.assert_allclose(one, predictor.predict_proba(pre.digit[None]), atol=1e-6)
    assert predictor.predict_proba([pre, pre]).shape == (2, 10)
