"""`digitlab adapt`: the samples reader (folders, CSVs, every bad form), the fine-tuning on a constructed
writer, the base run left untouched, and --out refused unless --overwrite."""

import base64
import dataclasses
import hashlib
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

import digitlab
from digitlab import runs
from digitlab.cli import app
from digitlab.errors import DataError, DigitlabError, RunError
from digitlab.preprocess import preprocess
from digitlab.training.adapt import LineSamples, Recipe, adapt, read_samples

FONT = ImageFont.load_default(size=64)


def drawn(text: str, rng: np.random.Generator, width: int = 100) -> Image.Image:
    """A constructed writer: `text` in Pillow's own typeface, dark on light paper, placed and turned a little
    differently each time. The tiny synthetic runs learnt blocks of ink, never these shapes."""
    image = Image.new("L", (width, 100), 255)
    x, y = width / 2 + rng.uniform(-8, 8), 50 + rng.uniform(-8, 8)
    ImageDraw.Draw(image).text((x, y), text, fill=0, font=FONT, anchor="mm")
    return image.rotate(rng.uniform(-8, 8), fillcolor=255)


def write_folder(root, per_digit: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for k in range(10):
        (root / str(k)).mkdir(parents=True, exist_ok=True)
        for i in range(per_digit):
            drawn(str(k), rng).save(root / str(k) / f"{seed}-{i}.png")
    return root


def digests(directory) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_reads_a_folder_per_digit(tmp_path):
    samples = read_samples(write_folder(tmp_path / "me", 2))
    assert len(samples) == 20 and samples.digits.shape == (20, 28, 28) and samples.digits.dtype == np.uint8
    assert samples.per_digit() == {str(k): 2 for k in range(10)} and samples.refused == ()
    assert read_samples(tmp_path / "me").digest == samples.digest
    drawn("7", np.random.default_rng(9)).save(tmp_path / "me" / "7" / "0-0.png")
    assert read_samples(tmp_path / "me").digest != samples.digest


def test_reads_a_csv_of_path_and_digit_beside_a_folder(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "pics").mkdir()
    lines = ["path,digit"]
    for k in range(10):
        drawn(str(k), rng).save(tmp_path / "pics" / f"d{k}.png")
        lines.append(f"pics/d{k}.png,{k}")
    (tmp_path / "me.csv").write_text("\n".join(lines) + "\n")
    samples = read_samples([tmp_path / "me.csv", write_folder(tmp_path / "more", 1, seed=2)])
    assert len(samples) == 20 and sorted(samples.labels.tolist()) == sorted(list(range(10)) * 2)
    assert samples.files[0] == str(tmp_path / "pics" / "d0.png")


def test_a_sample_preprocessing_refuses_is_listed_not_used(tmp_path):
    root = write_folder(tmp_path / "me", 1)
    Image.new("L", (80, 80), 255).save(root / "5" / "blank.png")
    drawn("1234", np.random.default_rng(3), width=300).save(root / "4" / "a-line.png")  # a number, not a digit
    samples = read_samples(root)
    assert len(samples) == 10
    reasons = {file.split("/")[-1]: (digit, why) for file, digit, why in samples.refused}
    assert reasons["blank.png"] == (5, "no ink found in the image")
    assert reasons["a-line.png"][0] == 4 and "side by side" in reasons["a-line.png"][1]


@pytest.mark.parametrize(
    "case, message",
    [
        ("one digit only", r"every usable sample is a 3; expected samples of each digit 0 to 9"),
        ("a digit missing", r"no usable sample of digit 9; expected at least 1 of each digit"),
        ("a digit only refused", r"no usable sample of digit 6 \(1 refused by preprocessing\)"),
        ("the same image twice", r"/8/copy.png: the same image as .*/8/0-0.png"),
        ("not an image", r"/2/notes.png: .*not an image|/2/notes.png: cannot"),
        ("a folder not a digit", r"/12/: digit: expected 0 to 9, got '12'"),
        ("a file beside the digit folders", r"/stray.png: a sample must stand in a sub-folder named for its digit"),
        ("a csv label outside 0-9", r"bad.csv:2: digit: expected 0 to 9, got '11'"),
        ("a csv row of one field", r"bad.csv:1: expected two fields, path,digit"),
        ("a csv naming no file", r"/missing.png: no such file"),
        ("neither folder nor csv", r"notes.txt: expected a folder of sub-folders 0/ … 9/ or a CSV of path,digit"),
        ("nothing there", r"/none: no such file or folder"),
    ],
)
def test_bad_samples_are_one_line_errors_naming_the_file(tmp_path, case, message):
    root = tmp_path / "me"
    rng = np.random.default_rng(4)
    source = root
    if case == "one digit only":
        (root / "3").mkdir(parents=True)
        for i in range(3):
            drawn("3", rng).save(root / "3" / f"{i}.png")
    else:
        write_folder(root, 1)
    if case == "a digit missing":
        shutil.rmtree(root / "9")
    elif case == "a digit only refused":
        (root / "6" / "0-0.png").unlink()
        Image.new("L", (50, 50), 255).save(root / "6" / "blank.png")
    elif case == "the same image twice":
        shutil.copy(root / "8" / "0-0.png", root / "8" / "copy.png")
    elif case == "not an image":
        (root / "2" / "notes.png").write_text("not a picture")
    elif case == "a folder not a digit":
        (root / "12").mkdir()
    elif case == "a file beside the digit folders":
        shutil.copy(root / "1" / "0-0.png", root / "stray.png")
    elif case.startswith("a csv"):
        source = tmp_path / "bad.csv"
        rows = {
            "a csv label outside 0-9": "path,digit\nme/1/0-0.png,11\n",
            "a csv row of one field": "me/1/0-0.png\n",
            "a csv naming no file": "me/1/missing.png,1\n",
        }[case]
        source.write_text(rows)
    elif case == "neither folder nor csv":
        source = tmp_path / "notes.txt"
        source.write_text("0,1\n")
    elif case == "nothing there":
        source = tmp_path / "none"
    with pytest.raises(DataError, match=message) as caught:
        read_samples(source)
    assert "\n" not in str(caught.value)


def accuracy(run, images) -> float:
    from digitlab.predict import load_predictor
    from digitlab.preprocess import preprocess

    digits = np.stack([preprocess(image).digit for image, _ in images])
    labels = np.array([label for _, label in images])
    return float(np.mean(load_predictor(run).raw_proba(digits).argmax(axis=1) == labels))


def test_adaptation_teaches_a_run_a_writer_and_leaves_the_base_untouched(tmp_path, synthetic_cnn_run, synthetic_dir):
    base = tmp_path / "base"
    shutil.copytree(synthetic_cnn_run, base)
    before_files = digests(base)
    samples = write_folder(tmp_path / "me", 3)
    rng = np.random.default_rng(11)  # the writer's other digits, never shown to adapt
    others = [(drawn(str(k), rng), k) for k in range(10) for _ in range(4)]
    out = tmp_path / "me-run"

    metrics = digitlab.adapt(base, samples, out, recipe=Recipe(steps=40, batch_size=32), data_dir=synthetic_dir)

    assert digests(base) == before_files
    before, after = accuracy(base, others), accuracy(out, others)
    assert before <= 0.3 and after >= before + 0.5, (before, after)  # 0.1 and 0.85 here
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["adapt"]["base_run"] == str(base.resolve()) and config["adapt"]["samples"] == 30
    assert config["adapt"]["samples_digest"] == read_samples(samples).digest
    assert config["model"] == json.loads((base / runs.CONFIG).read_text())["model"]
    assert (out / runs.SAMPLES).read_text().count(",yes\n") == 30
    assert metrics["adapt"]["samples"] == 30 and 0.0 < metrics["calibration"]["threshold"] < 1.0
    assert runs.check_run(out).calibration is not None  # a normal run: predict, serve, export read it
    # calibrated on the writer's own samples too: each of two folds read by a model adapted on the other
    calibration = metrics["calibration"]
    assert "30 of the person's samples, each read by a model adapted on the others" in calibration["fitted_on"]
    assert calibration["writer_coverage"] >= 0.9 and 0.0 <= calibration["writer_accepted_accuracy"] <= 1.0


def test_out_is_refused_unless_overwrite(tmp_path, synthetic_cnn_run):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match=r"--out .*taken: already exists; pass --overwrite to replace it"):
        adapt(synthetic_cnn_run, tmp_path / "no-samples", out)
    with pytest.raises(RunError, match="is the base run"):
        adapt(synthetic_cnn_run, tmp_path / "no-samples", synthetic_cnn_run, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"


def test_the_cli_refuses_an_existing_out_in_one_line(tmp_path, synthetic_cnn_run):
    out = tmp_path / "taken"
    shutil.copytree(synthetic_cnn_run, out)
    result = CliRunner().invoke(app, ["adapt", str(synthetic_cnn_run), str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: --out {out}: already exists; pass --overwrite to replace it"]


def samples_file(path, rng, per_digit: int = 1, **changes) -> dict:
    """The page's Teach mode download: {"format", "version", "samples": [{digit, image: PNG data URL}]}."""
    samples = []
    for k in range(10):
        for _ in range(per_digit):
            png = io.BytesIO()
            drawn(str(k), rng).save(png, format="PNG")
            samples.append({"digit": k, "image": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()})
    doc = {"format": "digitlab-samples", "version": 1, "samples": samples} | changes
    path.write_text(json.dumps(doc))
    return doc


def test_reads_the_pages_samples_file_beside_a_folder(tmp_path):
    doc = samples_file(tmp_path / "digitlab-samples.json", np.random.default_rng(5), per_digit=2)
    samples = read_samples([tmp_path / "digitlab-samples.json", write_folder(tmp_path / "more", 1, seed=6)])
    assert len(samples) == 30 and samples.per_digit() == {str(k): 3 for k in range(10)}
    assert samples.files[0] == f"{tmp_path / 'digitlab-samples.json'}: samples[0]"
    # the same preprocessing as the image file itself would get
    first = base64.b64decode(doc["samples"][0]["image"].split(",", 1)[1])
    assert np.array_equal(samples.digits[0], preprocess(first).digit)
    assert samples.sha256[0] == hashlib.sha256(first).hexdigest()


@pytest.mark.parametrize(
    "case, message",
    [
        ("not json", r"me.json: not valid JSON \(Expecting value, line 1\); expected a digitlab-samples file"),
        ("another format", r"me.json: format: expected 'digitlab-samples', got 'something-else'"),
        ("a list", r"me.json: format: expected 'digitlab-samples', got None"),
        ("a later version", r"me.json: version: expected 1, got 2"),
        ("no samples list", r"me.json: samples: expected a list of \{digit, image\}"),
        ("a label outside 0-9", r"me.json: samples\[3\].digit: expected 0 to 9, got 12"),
        ("a label as text", r"me.json: samples\[3\].digit: expected 0 to 9, got '3'"),
        ("a sample without image", r"me.json: samples\[3\]: expected an object with digit and image"),
        ("a JPEG data URL", r"me.json: samples\[3\].image: expected a PNG data URL \(data:image/png;base64,...\), got"),
        ("a path, not a data URL", r"me.json: samples\[3\].image: expected a PNG data URL .*got 'pics/3.png'"),
        ("bad base64", r"me.json: samples\[3\].image: not valid base64"),
        ("not a PNG inside", r"me.json: samples\[3\].image: not a PNG image"),
        ("a truncated PNG", r"me.json: samples\[3\]: image bytes \(\d+ bytes\)"),
        ("the same drawing twice", r"me.json: samples\[3\]: the same image as .*me.json: samples\[2\]"),
        ("no samples", r"me.json: no sample images found"),
    ],
)
def test_a_bad_samples_file_is_a_one_line_error_naming_it(tmp_path, case, message):
    path = tmp_path / "me.json"
    doc = samples_file(path, np.random.default_rng(7))
    sample = doc["samples"][3]
    png = sample["image"]
    if case == "not json":
        path.write_text("")
    elif case == "a list":
        path.write_text(json.dumps(doc["samples"]))
    else:
        if case == "another format":
            doc["format"] = "something-else"
        elif case == "a later version":
            doc["version"] = 2
        elif case == "no samples list":
            doc["samples"] = {"3": png}
        elif case == "a label outside 0-9":
            sample["digit"] = 12
        elif case == "a label as text":
            sample["digit"] = "3"
        elif case == "a sample without image":
            del sample["image"]
        elif case == "a JPEG data URL":
            sample["image"] = png.replace("image/png", "image/jpeg")
        elif case == "a path, not a data URL":
            sample["image"] = "pics/3.png"
        elif case == "bad base64":
            sample["image"] = png[:-5] + "!!!!="
        elif case == "not a PNG inside":
            sample["image"] = "data:image/png;base64," + base64.b64encode(b"GIF89a not really").decode()
        elif case == "a truncated PNG":
            raw = base64.b64decode(png.split(",", 1)[1])
            sample["image"] = "data:image/png;base64," + base64.b64encode(raw[:60]).decode()
        elif case == "the same drawing twice":
            sample["image"] = doc["samples"][2]["image"]
        elif case == "no samples":
            doc["samples"] = []
        path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as caught:
        read_samples(path)
    assert "\n" not in str(caught.value)


def test_the_server_adapts_and_serves_the_new_model_only_when_allowed(tmp_path, synthetic_cnn_run, synthetic_dir):
    from fastapi.testclient import TestClient

    from digitlab.serve import create_app
    from digitlab.serve.adapting import Adapting

    base = tmp_path / "base"
    shutil.copytree(synthetic_cnn_run, base)
    before_files = digests(base)
    doc = samples_file(tmp_path / "digitlab-samples.json", np.random.default_rng(0), per_digit=3)
    rng = np.random.default_rng(11)  # the writer's other digits, never sent
    others = [(drawn(str(k), rng), k) for k in range(10) for _ in range(4)]
    files = []
    for i, (image, _) in enumerate(others):
        png = io.BytesIO()
        image.save(png, format="PNG")
        files.append(("files", (f"{i}.png", png.getvalue(), "image/png")))

    def accuracy_served(client) -> float:
        results = client.post("/api/predict/batch", files=files).json()["results"]
        return float(np.mean([r["top3"][0]["digit"] == k for r, (_, k) in zip(results, others)]))

    off = TestClient(create_app(base))
    assert off.get("/api/adapt").json() == {"allowed": False}
    refused = off.post("/api/adapt", json=doc)
    assert refused.status_code == 403 and "--allow-adapt" in refused.json()["detail"]

    adapting = Adapting(base=base, data_dir=synthetic_dir, recipe=Recipe(steps=40, batch_size=32, writer_folds=0))
    with TestClient(create_app(base, adapting=adapting)) as client:
        assert client.get("/api/adapt").json() == {"allowed": True}
        as_text = client.post("/api/adapt", content=json.dumps(doc), headers={"Content-Type": "text/plain"})
        assert as_text.status_code == 415  # a simple cross-site request cannot send it
        bad = client.post("/api/adapt", json={**doc, "format": "x"})
        assert bad.status_code == 422
        assert bad.json()["detail"] == "digitlab-samples.json: format: expected 'digitlab-samples', got 'x'"
        before = accuracy_served(client)
        adapted = client.post("/api/adapt", json=doc)
        assert adapted.status_code == 200, adapted.json()
        assert adapted.json()["run"] == "base-adapted-1" and adapted.json()["samples"] == 30
        assert client.get("/api/model").json()["name"] == "base-adapted-1"  # no restart
        after = accuracy_served(client)
        assert before <= 0.3 and after >= before + 0.5, (before, after)
    assert digests(base) == before_files and (tmp_path / "base-adapted-1" / runs.CONFIG).is_file()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--workers", "2"], "--allow-adapt: needs --workers 1 (one process holds the model it adapts), got 2"),
        (["--runtime", "onnx"], "--allow-adapt: needs --runtime keras (an adapted run has no model.onnx), got onnx"),
        (
            ["--host", "0.0.0.0"],
            "--allow-adapt: on 0.0.0.0 only with --allowed-hosts naming the hosts that may ask (loopback by default)",
        ),
    ],
)
def test_serve_allow_adapt_is_refused_in_one_line_where_it_cannot_work(synthetic_cnn_run, options, message):
    result = CliRunner().invoke(app, ["serve", str(synthetic_cnn_run), "--allow-adapt", "--port", "0", *options])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [f"error: {message}"]


# Line runs: numbers with their text.


def write_numbers(root, texts, seed: int = 0):
    """A folder per number, the constructed writer's drawing of it inside."""
    rng = np.random.default_rng(seed)
    for i, text in enumerate(texts):
        (root / text).mkdir(parents=True, exist_ok=True)
        drawn(text, rng, width=60 + 40 * len(text)).save(root / text / f"{seed}-{i}.png")
    return root


def test_a_line_runs_samples_are_numbers_from_a_folder_a_csv_and_the_pages_file(tmp_path):
    folder = write_numbers(tmp_path / "me", ["4096", "17", "250"])
    rng = np.random.default_rng(1)
    (tmp_path / "pics").mkdir()
    drawn("31", rng, width=140).save(tmp_path / "pics" / "a.png")
    (tmp_path / "me.csv").write_text("path,text\npics/a.png,31\n")
    png = io.BytesIO()
    drawn("8", rng).save(png, format="PNG")
    page = tmp_path / "digitlab-samples.json"
    image = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    page.write_text(
        json.dumps({"format": "digitlab-samples", "version": 1, "samples": [{"text": "8", "image": image}]})
    )

    samples = read_samples([folder, tmp_path / "me.csv", page], kind="line")

    assert isinstance(samples, LineSamples) and samples.images.shape == (5, 32, 256)
    assert sorted(samples.texts) == ["17", "250", "31", "4096", "8"]
    assert samples.per_length() == {"1": 1, "2": 2, "3": 1, "4": 1}
    labels = samples.labels(10)
    assert labels[samples.texts.index("250")].tolist()[:4] == [2, 5, 0, -1]
    from digitlab.predict.segmented import open_image
    from digitlab.preprocess.line import line_image

    i = samples.texts.index("31")  # normalised as a person's line is for the line model
    assert np.array_equal(samples.images[i], line_image(open_image(tmp_path / "pics" / "a.png")[0]))


@pytest.mark.parametrize(
    "case, message",
    [
        ("text not all digits", r"/4o96/: text: expected a number of 1 to 10 digits 0-9, got '4o96'"),
        ("a csv text too long", r"bad.csv:1: text: expected a number of 1 to 10 digits 0-9, got '123456789012'"),
        (
            "a digit image for a number",
            r"/40961234/0.png: its ink is 0\.\d times as wide as tall, too narrow for the 8",
        ),
        ("a number for one digit", r"/7/0.png: its ink is \d\.\d times as wide as tall, too wide for the 1 digit"),
        ("single digits only", r"samples: every usable sample is a single digit; a line run learns whole numbers"),
        ("a page file of digits", r"samples: every usable sample is a single digit"),
        ("a page file's text not digits", r"me.json: samples\[0\].text: text: expected a number"),
    ],
)
def test_a_line_runs_bad_samples_are_one_line_errors_naming_the_file(tmp_path, case, message):
    rng = np.random.default_rng(2)
    root = write_numbers(tmp_path / "me", ["52", "903"])
    source = root
    if case == "text not all digits":
        (root / "4o96").mkdir()
        drawn("4096", rng, width=220).save(root / "4o96" / "0.png")
    elif case == "a csv text too long":
        source = tmp_path / "bad.csv"
        source.write_text("me/52/0-0.png,123456789012\n")
    elif case == "a digit image for a number":
        (root / "40961234").mkdir()
        drawn("4", rng).save(root / "40961234" / "0.png")
    elif case == "a number for one digit":
        (root / "7").mkdir()
        drawn("77777", rng, width=300).save(root / "7" / "0.png")
    elif case == "single digits only":
        source = write_folder(tmp_path / "digits", 1)
    elif case.startswith("a page file"):
        source = tmp_path / "me.json"
        doc = samples_file(source, rng)
        if case == "a page file's text not digits":
            doc["samples"][0] = {"text": "four", "image": doc["samples"][0]["image"]}
            source.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as caught:
        read_samples(source, kind="line")
    assert "\n" not in str(caught.value)


def ctc_loss(run, samples: LineSamples) -> float:
    from digitlab.predict import load_predictor
    from digitlab.training.tasks import CTCLoss

    probs = load_predictor(run, require_calibration=False).raw_proba(samples.images)
    return float(CTCLoss()(samples.labels(10), probs))


@pytest.mark.slow  # about a minute on 2 shared cores: a line model's fit, its validation and calibration
def test_adapting_a_line_run_teaches_it_a_writers_numbers_and_leaves_the_base_untouched(
    tmp_path, line_digit_run, synthetic_dir
):
    base = tmp_path / "base"
    shutil.copytree(line_digit_run, base)  # with its digit model (digits/) for the combined reader
    before_files = digests(base)
    rng = np.random.default_rng(3)
    texts = ["".join(map(str, rng.integers(0, 10, rng.integers(2, 5)))) for _ in range(12)]
    samples = write_numbers(tmp_path / "me", texts)
    others = read_samples(write_numbers(tmp_path / "others", ["305", "7281", "64", "19"], seed=9), kind="line")

    metrics = adapt(
        base,
        samples,
        tmp_path / "me-run",
        recipe=Recipe(
            steps=30,
            batch_size=16,
            mix=0.5,
            layers="all",
            learning_rate=3e-3,
            rotate=0.0,
            scale=0.0,
            numbers_per_subset=1,
        ),
        data_dir=synthetic_dir,
    )

    out = tmp_path / "me-run"
    assert digests(base) == before_files
    before, after = ctc_loss(base, others), ctc_loss(out, others)
    assert after < 0.8 * before, (before, after)  # the writer's other numbers, never shown to adapt
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["model"] == json.loads((base / runs.CONFIG).read_text())["model"]
    assert (
        config["adapt"]["samples"] == 12 and config["adapt"]["samples_digest"] == read_samples(samples, "line").digest
    )
    assert (
        config["train"]["lines"] == 240 and config["train"]["shift"] == 0
    )  # a line run's configuration holds no warps
    assert (out / runs.SAMPLES).read_text().splitlines()[0] == "file,text,sha256,used"
    assert metrics["adapt"]["samples"] == 12 and metrics["calibration"]["kind"] == "string"
    checked = runs.check_run(out)
    assert checked.kind == "line" and checked.calibration is not None  # read, serve, evaluate use it
    numbers = runs.read_json(out / runs.CALIBRATION)["numbers"]  # the rule for whole numbers, fitted again
    assert numbers["fitted_on"].startswith("7 numbers composed from the validation split")
    assert metrics["calibration"]["numbers"] == numbers
    digit_model = {name: d for name, d in digests(base / "digits").items() if name != runs.LOCK}
    assert digests(out / "digits") == digit_model  # the digit model, a run of its own, as it was


def test_prototypes_fold_into_the_classifier_as_a_nearest_class_mean_blend(synthetic_cnn_run):
    import keras

    from digitlab.predict.keras_runtime import load_keras_model
    from digitlab.training.adapt import Samples, fold_prototypes

    model = load_keras_model(synthetic_cnn_run / runs.MODEL)
    rng = np.random.default_rng(3)
    digits = rng.integers(0, 256, (20, 28, 28)).astype(np.uint8)
    labels = np.repeat(np.arange(10), 2)
    classifier = model.get_layer("probabilities")
    features = keras.Model(model.input, classifier.input)
    f = keras.ops.convert_to_numpy(features(digits.astype(np.float32))).astype(np.float64)
    kernel, bias = classifier.get_weights()
    x = rng.integers(0, 256, (7, 28, 28)).astype(np.float32)  # any images, read before and after
    fx = keras.ops.convert_to_numpy(features(x)).astype(np.float64)
    # no warps: the copies are the samples themselves, so the prototypes are the samples' own means
    still = Recipe(shift=0, rotate=0, scale=0, shear=0, thickness=0, blur=0, prototypes=0.5, prototype_warps=2)

    fold_prototypes(model, Samples(digits, labels, (), ()), still, seed=0)

    mu = np.stack([f[labels == k].mean(0) for k in range(10)])
    tau = np.mean(np.sum((f - mu[labels]) ** 2, axis=1))
    logits = fx @ kernel + bias
    gain = -np.sum((fx[:, None] - mu[None]) ** 2, axis=2) / tau
    logits[:, :10] += 0.5 * (gain - gain.mean(axis=1, keepdims=True))
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    got = keras.ops.convert_to_numpy(model(x))
    assert np.allclose(got, expected[:, : got.shape[1]], atol=1e-5)
    assert not np.allclose(got, keras.ops.convert_to_numpy(load_keras_model(synthetic_cnn_run / runs.MODEL)(x)))
    with pytest.raises(DigitlabError, match="prototype_warps >= 1"):
        Recipe(prototypes=1.0, prototype_warps=0)


def test_an_adaptation_with_prototypes_saves_and_scores_the_blended_model(tmp_path, synthetic_cnn_run, synthetic_dir):
    from digitlab.config import TrainConfig
    from digitlab.data import run_split
    from digitlab.predict import load_predictor

    recipe = Recipe(steps=10, batch_size=32, prototypes=0.5, prototype_warps=2, writer_folds=0)
    out = tmp_path / "me-run"

    metrics = digitlab.adapt(
        synthetic_cnn_run, write_folder(tmp_path / "me", 1), out, recipe=recipe, data_dir=synthetic_dir
    )

    assert json.loads((out / runs.CONFIG).read_text())["adapt"]["recipe"]["prototypes"] == 0.5
    # the validation score is the saved model's, read as every reader reads it, not the model before the blend
    split = run_split(TrainConfig.from_dict(json.loads((out / runs.CONFIG).read_text())["train"]), synthetic_dir)
    saved = load_predictor(out).raw_proba(split.x_val).argmax(1) == split.y_val
    assert metrics["validation"]["accuracy"] == pytest.approx(saved.mean(), abs=1e-6)


def test_an_adapted_line_run_that_learnt_marks_keeps_drawing_them_among_its_lines(tmp_path, synthetic_dir):
    """The mix against forgetting is the run's own lines, marks and all: a run that learnt "not a digit" keeps
    seeing it while it learns a person's numbers, or it would forget the symbol."""
    from digitlab.config import resolve_configs
    from digitlab.data import run_split
    from digitlab.data.synth.lines import MARK_LABEL
    from digitlab.training.adapt import LINE_RECIPE, LineAdaptTask

    model_cfg, base = resolve_configs("numbers", val_lines=8, dataset="synthetic", digit_model=None)
    assert base.outliers > 0  # the numbers preset learns marks
    recipe = dataclasses.replace(LINE_RECIPE, steps=4, batch_size=50)  # 150 of the run's lines
    cfg = recipe.train_config(base, seed=0, line=True)
    samples = read_samples(write_numbers(tmp_path / "me", ["52", "903", "4096"]), kind="line")
    task = LineAdaptTask(model_cfg, cfg, run_split(cfg, synthetic_dir), samples, recipe)

    _, labels = task.fit_inputs(initial_epoch=0)["x"].draw(0)

    marked = (labels == MARK_LABEL).any(axis=1)
    assert 0.5 * cfg.outliers < marked.mean() < 1.5 * cfg.outliers, marked.mean()
