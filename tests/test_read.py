"""Reading whole numbers: segmentation on drawn cases, `digitlab.read`, `digitlab read` and /api/read."""

import base64
import io
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from digitlab.cli import app as cli
from digitlab.errors import DigitlabError
from digitlab.preprocess.segment import MAX_CANDIDATES, segment

# --- drawn cases: segmentation alone ------------------------------------------------------------------


def drawn(size, strokes, width=3) -> np.ndarray:
    """A bool ink mask with `strokes` (lists of points, or ("ellipse", box)) drawn on it."""
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    for s in strokes:
        if s[0] == "ellipse":
            draw.ellipse(s[1], outline=255, width=width)
        else:
            draw.line(s, fill=255, width=width)
    return np.asarray(img) > 0


def candidates(mask):
    seg = segment(mask)
    return seg, [c for line in seg.lines for c in line]


def test_a_five_with_a_detached_bar_is_one_candidate():
    five = drawn((40, 40), [[(12, 8), (26, 8)], [(12, 13), (12, 20), (22, 20), (26, 26), (22, 32), (10, 32)]])
    seg, found = candidates(five)
    assert seg.labels.max() == 2  # the bar and the body are apart
    assert len(found) == 1 and found[0].whole.ids == (1, 2)


def test_a_dot_above_a_one_and_a_seven_crossbar_join_their_digit():
    one_with_dot = drawn((60, 50), [[(15, 16), (15, 42)], [(14, 8), (16, 8)], [(35, 12), (48, 12), (40, 42)]])
    cross = drawn((60, 50), [[(35, 27), (47, 27)]])
    seg, found = candidates(one_with_dot | cross)
    assert len(seg.lines) == 1 and len(found) == 2
    assert [len(c.whole.ids) for c in found] == [2, 1]  # the 7 and its crossbar touch: one piece


def test_a_four_broken_below_its_bar_is_one_candidate():
    four = drawn((40, 40), [[(18, 6), (8, 24), (28, 24)], [(24, 6), (24, 24)], [(24, 28), (24, 36)]])
    _, found = candidates(four)
    assert len(found) == 1 and len(found[0].whole.ids) == 2


def test_two_ones_touching_by_a_pixel_are_one_blob_with_the_cut_between_them():
    ones = np.zeros((40, 30), bool)
    ones[8:32, 10:13] = ones[8:32, 14:17] = True
    ones[20, 13] = True  # the one pixel where they touch
    seg, found = candidates(ones)
    assert seg.labels.max() == 1 and len(found) == 1
    cuts = {parts[1].cols[0] for parts in found[0].cuts if len(parts) == 2}
    assert 13 in cuts, f"cuts at {cuts}"
    (left, right) = next(parts for parts in found[0].cuts if parts[1].cols[0] == 13)
    assert left.box == (10, 8, 13, 32) and right.box == (13, 8, 17, 32)


def test_two_zeros_a_pixel_apart_stay_two_candidates():
    zeros = drawn((60, 40), [("ellipse", (6, 8, 23, 32)), ("ellipse", (25, 8, 42, 32))])
    assert not zeros[:, 24].any() and zeros[:, 23].any() and zeros[:, 25].any()
    _, found = candidates(zeros)
    assert [c.whole.box[0] for c in found] == [6, 25]


def test_lines_are_found_top_to_bottom_and_digits_left_to_right():
    strokes = [[(x, y), (x, y + 20)] for y in (60, 6, 33) for x in (40, 10, 25)]
    seg = segment(drawn((60, 90), strokes))
    assert len(seg.lines) == 3
    assert [[c.whole.box[:2] for c in line] for line in seg.lines] == [
        [(x - 1, y) for x in (10, 25, 40)] for y in (6, 33, 60)
    ]


def test_more_than_the_candidate_limit_is_a_clear_error():
    mask = np.zeros((40, 400), bool)
    mask[10:30, 2 : 6 * (MAX_CANDIDATES + 1) : 6] = True
    with pytest.raises(DigitlabError, match=f"65 separate marks found, at most {MAX_CANDIDATES}"):
        segment(mask)


# --- the library, the CLI and the API with a run trained on MNIST -------------------------------------


def mnist_number(ds, indices, gap=6, margin=8, lines=None) -> np.ndarray:
    """MNIST test digits cut to their ink and set side by side `gap` px apart, dark ink on white."""
    crops = []
    for i in indices:
        d = ds.x_test[i]
        cols = np.flatnonzero(d.any(0))
        crops.append(d[:, cols[0] : cols[-1] + 1])
    width = sum(c.shape[1] for c in crops) + gap * (len(crops) - 1) + 2 * margin
    img = np.zeros((28 + 2 * margin, width), np.uint8)
    x = margin
    for c in crops:
        img[margin : margin + 28, x : x + c.shape[1]] = np.maximum(img[margin : margin + 28, x : x + c.shape[1]], c)
        x += c.shape[1] + gap
    return 255 - img


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def first_of(ds, digits: str) -> list[int]:
    """The first test image of each digit in `digits` (repeats take the next one)."""
    out = []
    for ch in digits:
        out.append(next(i for i in range(len(ds.y_test)) if ds.y_test[i] == int(ch) and i not in out))
    return out


@pytest.fixture(scope="module")
def predictor(trained_run):
    from digitlab.predict import load_predictor

    return load_predictor(trained_run)


@pytest.mark.slow
def test_a_single_digit_reads_exactly_as_predict_reads_it(predictor, mnist, tmp_path):
    from digitlab import read
    from digitlab.predict import predict_files
    from digitlab.preprocess import preprocess

    paths = []
    for k, i in enumerate(range(0, 400, 20)):
        d = np.kron(255 - mnist.x_test[i], np.ones((3, 3), np.uint8))  # 84x84, dark on white
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(d).save(paths[-1])
    for path, row in zip(paths, predict_files(predictor, paths)):
        reading = read(predictor, path)
        assert len(reading.digits) == 1, (path, reading.text)
        (digit,) = reading.digits
        np.testing.assert_array_equal(reading.crops[0], preprocess(path).digit)
        assert digit.unsure == row["unsure"] and digit.confidence == pytest.approx(row["confidence"], abs=1e-5)
        assert digit.digit == row["top3"][0]["digit"] and reading.text == row["top3"][0]["label"]


@pytest.mark.slow
@pytest.mark.parametrize("gap", [6, 1, 0])
def test_a_number_of_mnist_digits_reads_left_to_right(predictor, mnist, gap):
    from digitlab import read

    reading = read(predictor, mnist_number(mnist, first_of(mnist, "2026"), gap=gap))
    assert reading.text == "2026" and reading.lines == ("2026",)
    assert reading.confidence == pytest.approx(np.prod([d.confidence for d in reading.digits]))
    boxes = [d.box for d in reading.digits]
    assert all(a[2] <= b[0] + 2 for a, b in zip(boxes, boxes[1:]))  # left to right, hardly overlapping


@pytest.mark.slow
def test_eleven_touching_by_a_pixel_and_zeros_a_pixel_apart_are_split(predictor, mnist):
    from digitlab import read

    ones = mnist_number(mnist, first_of(mnist, "11"), gap=-1)  # overlapping by a column: touching
    assert read(predictor, ones).text == "11"
    assert read(predictor, mnist_number(mnist, first_of(mnist, "00"), gap=1)).text == "00"


@pytest.mark.slow
def test_several_lines_are_read_in_order(predictor, mnist):
    from digitlab import read

    top, bottom = mnist_number(mnist, first_of(mnist, "123")), mnist_number(mnist, first_of(mnist, "4567"))
    page = np.full((top.shape[0] + bottom.shape[0], bottom.shape[1]), 255, np.uint8)
    page[: top.shape[0], : top.shape[1]] = top
    page[top.shape[0] :] = bottom
    reading = read(predictor, page)
    assert reading.lines == ("123", "4567") and reading.text == "123\n4567"
    assert [d.line for d in reading.digits] == [0] * 3 + [1] * 4


@pytest.mark.slow
def test_no_ink_is_no_text_with_a_reason(predictor):
    from digitlab import read

    reading = read(predictor, np.full((40, 90), 255, np.uint8))
    assert reading.text is None and reading.unsure and "no ink" in reading.reason and reading.digits == ()


# --- the CLI -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_read_files_and_folders_json_csv_and_debug(trained_run, mnist, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(mnist_number(mnist, first_of(mnist, "2026"))).save(folder / "year.png")
    (folder / "broken.png").write_bytes(b"not a PNG")
    runner = CliRunner()
    result = runner.invoke(cli, ["read", str(trained_run), str(folder), "--json", "--debug", str(tmp_path / "dbg")])
    assert result.exit_code == 1, result.output  # one file could not be read; the others are still read
    rows = json.loads(result.output[: result.output.rindex("]") + 1])
    by_name = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    assert "not an image" in by_name["broken.png"]["error"]
    year = by_name["year.png"]
    assert year["text"] == "2026" and year["lines"] == ["2026"] and len(year["digits"]) == 4
    assert set(year["digits"][0]) == {"digit", "confidence", "box", "line", "unsure"}
    assert Image.open(year["debug"]).size[0] >= 720
    csv_out = runner.invoke(cli, ["read", str(trained_run), str(folder / "year.png"), "--csv"])
    assert csv_out.exit_code == 0 and csv_out.output.splitlines()[1].startswith(f"{folder / 'year.png'},2026,")
    table = runner.invoke(cli, ["read", str(trained_run), str(folder / "year.png")])
    assert table.exit_code == 0 and ": 2026 (" in table.output


def test_cli_read_of_a_missing_run_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["read", str(tmp_path / "nope"), str(tmp_path)])
    assert result.exit_code == 2 and "nope" in result.output and len(result.output.strip().splitlines()) == 1


# --- the API -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_client(tmp_path_factory, synthetic_mlp_run):
    from digitlab.serve import create_app

    run = shutil.copytree(synthetic_mlp_run, tmp_path_factory.mktemp("read") / "mlp-synthetic")
    return TestClient(create_app(run), raise_server_exceptions=False)


def many_marks_png() -> bytes:
    a = np.full((40, 420), 255, np.uint8)
    a[10:30, 4 : 6 * 70 : 6] = 0
    return png(a)


def blank_png() -> bytes:
    return png(np.full((40, 90), 255, np.uint8))


def truncated_png() -> bytes:
    return png(np.zeros((1, 1), np.uint8))[:20]  # a PNG signature and a truncated header


READ_BAD_INPUTS = [
    ("not an image", "/api/read", {"files": {"file": ("x.png", b"hello", "image/png")}}, 422, "not an image"),
    ("empty file", "/api/read", {"files": {"file": ("x.png", b"", "image/png")}}, 422, "empty"),
    ("truncated", "/api/read", lambda: {"files": {"file": ("x.png", truncated_png(), "image/png")}}, 422, "file:"),
    ("wrong content type", "/api/read", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "Content"),
    ("invalid JSON", "/api/read", {"content": b"{", "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ("neither image nor pixels", "/api/read", {"json": {}}, 422, "exactly one of"),
    ("bad base64", "/api/read", {"json": {"image": "%%%"}}, 422, "image: not valid base64"),
    (
        "too many marks",
        "/api/read",
        lambda: {"files": {"file": ("m.png", many_marks_png(), "image/png")}},
        422,
        "at most 64",
    ),
    ("batch: no field", "/api/read/batch", {"json": {}}, 422, "exactly one of"),
    ("batch: empty list", "/api/read/batch", {"json": {"images": []}}, 422, "empty list"),
    ("batch: too many", "/api/read/batch", {"json": {"images": ["aGk="] * 257}}, 413, "at most 256"),
]


@pytest.mark.parametrize(
    "path, request_args, status, detail", [c[1:] for c in READ_BAD_INPUTS], ids=[c[0] for c in READ_BAD_INPUTS]
)
def test_read_bad_input_gives_a_4xx_naming_the_problem(synthetic_client, path, request_args, status, detail):
    r = synthetic_client.post(path, **(request_args() if callable(request_args) else request_args))
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]


def test_read_api_goes_on_after_bad_input_without_a_500(synthetic_client):
    for _, path, request_args, status, _ in READ_BAD_INPUTS:
        args = request_args() if callable(request_args) else request_args
        assert synthetic_client.post(path, **args).status_code == status
    r = synthetic_client.post("/api/read", files={"file": ("blank.png", blank_png(), "image/png")})
    assert r.status_code == 200 and r.json()["text"] is None and "no ink" in r.json()["reason"]
    assert synthetic_client.get("/api/health").json()["internal_errors"] == 0


def test_read_batch_keeps_order_and_reports_a_bad_file(synthetic_client):
    files = [("files", ("a.png", blank_png(), "image/png")), ("files", ("b.png", b"junk", "image/png"))]
    r = synthetic_client.post("/api/read/batch", files=files)
    assert r.status_code == 200, r.text
    a, b = r.json()["results"]
    assert (a["index"], a["name"], a["text"]) == (0, "a.png", None)
    assert b["index"] == 1 and b["error"].startswith("files[1]") and "not an image" in b["error"]


@pytest.mark.slow
def test_read_api_matches_the_library_in_every_input_form(trained_run, predictor, mnist):
    from digitlab import read
    from digitlab.serve import create_app
    from digitlab.serve.schemas import Reading

    client = TestClient(create_app(trained_run), raise_server_exceptions=False)
    image = png(mnist_number(mnist, first_of(mnist, "2026"), gap=1))
    expected = read(predictor, image)
    multipart = client.post("/api/read", files={"file": ("year.png", image, "image/png")})
    assert multipart.status_code == 200, multipart.text
    body = Reading.model_validate(multipart.json())
    assert body.text == expected.text == "2026" and body.size == [expected.size[0], expected.size[1]]
    assert [d.box for d in body.digits] == [list(d.box) for d in expected.digits]
    assert np.asarray(body.digits[0].preprocessed).shape == (28, 28)
    b64 = client.post("/api/read", json={"image": "data:image/png;base64," + base64.b64encode(image).decode()})
    assert b64.json()["text"] == "2026"
    pixels = client.post("/api/read", json={"pixels": mnist.x_test[first_of(mnist, "7")[0]].tolist()})
    assert pixels.status_code == 200 and pixels.json()["text"] == "7"
    batch = client.post("/api/read/batch", json={"images": [base64.b64encode(image).decode()] * 2})
    assert [r["text"] for r in batch.json()["results"]] == ["2026", "2026"]


# --- a known count of digits (--digits): constructed cases, a stand-in classifier ---------------------

NAMES = tuple(str(i) for i in range(10))


def shapes(x: np.ndarray) -> np.ndarray:
    """A stand-in digit model for drawn cases: a filled narrow bar is a 1 (0.95), ink around a hole no
    wider than tall a 0 (0.9), anything else a 4 at 0.4 (unsure under a threshold of 0.5)."""
    from scipy import ndimage as ndi

    out = np.empty((len(x), 10), np.float32)
    for row, img in zip(out, x):
        ink = img > 100
        cols, rows = int(ink.any(0).sum()), int(ink.any(1).sum())
        hole = int(ndi.binary_fill_holes(ink).sum() - ink.sum())
        if cols <= 9 and ink.sum() > 0.6 * cols * rows:
            k, p = 1, 0.95
        elif hole > 10 and cols <= 22:
            k, p = 0, 0.9
        else:
            k, p = 4, 0.4
        row[:] = (1 - p) / 9
        row[k] = p
    return out


@pytest.fixture(scope="module")
def stand_in():
    from digitlab.predict import Predictor

    return Predictor(shapes, (28, 28), NAMES, threshold=0.5, kind="digit")


def ones_touching() -> np.ndarray:
    ones = np.full((40, 30), 255, np.uint8)
    ones[8:32, 10:13] = ones[8:32, 14:17] = 0
    ones[20, 13] = 0  # the one pixel where they touch
    return ones


def zeros_overlapping(overlap: int) -> np.ndarray:
    img = Image.new("L", (50, 40), 255)
    draw = ImageDraw.Draw(img)
    draw.ellipse((6, 8, 23, 32), outline=0, width=3)
    draw.ellipse((23 - overlap, 8, 40 - overlap, 32), outline=0, width=3)
    return np.asarray(img)


def bars(xs) -> np.ndarray:
    img = np.full((40, 60), 255, np.uint8)
    for x in xs:
        img[8:32, x : x + 3] = 0
    return img


def test_an_unsure_digit_is_named_by_its_place(stand_in):
    """ "the 2nd digit", not "digit 2", which reads as a value."""
    from digitlab import read
    from digitlab.predict.results import ordinal

    img = bars([8])
    img[8:32, 26:44] = 0  # a filled block: a 4 at 0.4 to the stand-in, under its threshold of 0.5
    reading = read(stand_in, img)
    assert reading.text == "14" and reading.reason.startswith("the 2nd digit: unsure: 4 or "), reading.reason
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th"
    ]  # fmt: skip


def test_eleven_touching_by_a_pixel_reads_11_with_two_digits_expected(stand_in):
    from digitlab import read

    alone = read(stand_in, ones_touching())
    assert alone.text == "1" and not alone.unsure  # one narrow bar to the classifier
    two = read(stand_in, ones_touching(), digits=2)
    assert two.text == "11" and two.unsure and two.reason == "expected 2 digits, found 1"  # forced: not clearly
    assert [d.box[0] for d in two.digits] == [10, 13]  # cut at the pixel where they touch
    assert read(stand_in, ones_touching(), digits="1-2").text == "1"  # the best reading fits: kept


@pytest.mark.parametrize("overlap", [2, 4, 6])
def test_overlapping_zeros_read_00_with_two_digits_expected(stand_in, overlap):
    from digitlab import read

    assert read(stand_in, zeros_overlapping(overlap)).text == "0"  # one ring-like blob
    both = read(stand_in, zeros_overlapping(overlap), digits=2)
    assert both.text == "00" and both.reason == "expected 2 digits, found 1"
    assert both.confidence == pytest.approx(0.9**2, rel=1e-4)


def test_a_count_no_reading_can_have_is_unsure_saying_what_was_found(stand_in):
    from digitlab import read

    three = bars([10, 25, 40])  # three bars too narrow to cut
    assert read(stand_in, three, digits=3).text == "111"
    four = read(stand_in, three, digits=4)
    assert four.text == "111" and four.unsure and four.reason == "expected 4 digits, found 3 clearly"
    assert read(stand_in, three, digits="2-3").reason is None
    fewer = read(stand_in, three, digits=2)  # two neighbours merged into one digit
    assert len(fewer.digits) == 2


def test_a_count_is_met_by_the_best_choice_over_all_candidates(stand_in):
    """Two lines: the first a blob of two touching 1s, the second a single 1; three digits in all are
    the blob cut and the single bar kept, not the single bar cut."""
    from digitlab import read

    page = np.full((90, 40), 255, np.uint8)
    page[:40, :30] = ones_touching()
    page[50:82, 12:15] = 0
    reading = read(stand_in, page, digits=3)
    assert reading.lines == ("11", "1") and [d.line for d in reading.digits] == [0, 0, 1]


def test_the_count_is_checked_before_any_image_is_read(stand_in):
    from digitlab import read

    for bad, expected in [
        (0, "at least 1 digit"),
        ("9-4", "runs backwards"),
        ("abc", "like 4 or a range"),
        (65, "at most 64"),
    ]:
        with pytest.raises(DigitlabError, match=f"^digits: .*{expected}"):
            read(stand_in, "/nonexistent.png", digits=bad)


BAD_DIGITS = [("0", "at least 1 digit"), ("9-4", "runs backwards"), ("abc", "like 4 or a range"), ("65", "at most 64")]


@pytest.mark.parametrize("value, expected", BAD_DIGITS)
def test_cli_read_and_batch_refuse_a_bad_digits_option_in_one_line(synthetic_mlp_run, tmp_path, value, expected):
    image = tmp_path / "bars.png"
    Image.fromarray(bars([10, 25, 40])).save(image)
    out = tmp_path / "out"
    read_args = ["read", str(synthetic_mlp_run), str(image)]
    batch_args = ["batch", str(synthetic_mlp_run), str(image), "--out", str(out), "--task", "number"]
    for args in (read_args, batch_args):
        result = CliRunner().invoke(cli, [*args, "--digits", value])
        assert result.exit_code == 2, result.output
        assert result.output.strip().count("\n") == 0 and "--digits" in result.output and expected in result.output
        assert not out.exists()


def test_cli_read_with_a_count_no_reading_meets_says_what_it_found(synthetic_mlp_run, tmp_path):
    image = tmp_path / "bars.png"
    Image.fromarray(bars([10, 25, 40])).save(image)  # three bars too narrow to cut
    result = CliRunner().invoke(cli, ["read", str(synthetic_mlp_run), str(image), "--json", "--digits", "5-9"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert len(row["text"]) == 3 and row["unsure"] and row["reason"].startswith("expected 5-9 digits, found 3")


def test_batch_reads_numbers_with_a_count_and_refuses_it_for_digits(synthetic_mlp_run, tmp_path):
    import pyarrow.parquet as pq

    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(bars([10, 25, 40])).save(folder / "bars.png")
    out = tmp_path / "out"
    args = ["batch", str(synthetic_mlp_run), str(folder), "--out", str(out), "--engine", "local", "--task", "number"]
    result = CliRunner().invoke(cli, [*args, "--digits", "5", "--runtime", "keras", "-q"])
    assert result.exit_code == 0, result.output
    (row,) = pq.read_table(out).to_pylist()
    assert row["reason"].startswith("expected 5 digits, found 3")
    wrong = CliRunner().invoke(
        cli, [*args[:-2], "--task", "digit", "--digits", "4", "--runtime", "keras", "--overwrite"]
    )
    assert wrong.exit_code == 2 and "--digits" in wrong.output and "--task number" in wrong.output


@pytest.mark.parametrize("value, expected", BAD_DIGITS)
def test_read_api_refuses_a_bad_digits_parameter_with_a_422_naming_it(synthetic_client, value, expected):
    for path in ("/api/read", "/api/read/batch"):
        r = synthetic_client.post(f"{path}?digits={value}", json={"images" if "batch" in path else "image": []})
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("digits: ") and expected in r.json()["detail"]


def test_read_api_reads_with_a_count_of_digits(synthetic_client):
    image = base64.b64encode(png(bars([10, 25, 40]))).decode()
    r = synthetic_client.post("/api/read?digits=5", json={"image": image})
    assert r.status_code == 200, r.text
    assert r.json()["unsure"] and r.json()["reason"].startswith("expected 5 digits, found 3")
    assert synthetic_client.post("/api/read?digits=3", json={"image": image}).json()["reason"] != r.json()["reason"]
    batch = synthetic_client.post("/api/read/batch?digits=5", files=[("files", ("b.png", png(bars([10, 25, 40]))))])
    assert batch.status_code == 200 and batch.json()["results"][0]["reason"].startswith("expected 5 digits")


def test_a_line_of_200_digits_is_a_clear_error_at_once(stand_in):
    import time

    from digitlab import read
    from digitlab.predict.segmented import MAX_ASPECT

    line = np.full((40, 200 * 28), 255, np.uint8)
    line[8:32, 10::28] = 0  # 200 bars, 28 px apart
    start = time.perf_counter()
    with pytest.raises(
        DigitlabError, match=rf"^image: 5600x40 px, 140 times as wide as it is tall; expected at most {MAX_ASPECT}"
    ):
        read(stand_in, line, digits=64)
    assert time.perf_counter() - start < 5  # decoding and shrinking it, nothing more
    assert len(read(stand_in, line[:, : 20 * 28]).text) == 20  # 20 digits are still read


def test_a_run_of_four_touching_ones_is_cut_into_four_over_its_cut_graph(stand_in):
    from digitlab import read
    from digitlab.preprocess.segment import cut_graph

    ones = np.full((40, 40), 255, np.uint8)
    for x in (10, 14, 18, 22):
        ones[8:32, x : x + 3] = 0
    ones[20, [13, 17, 21]] = 0  # each touching the next by a pixel
    assert len(read(stand_in, ones).text) < 4  # at most three digits from a blob as narrow as this
    four = read(stand_in, ones, digits=4)
    assert four.text == "1111" and four.digits[0].box[0] == 10 and four.digits[-1].box[2] == 25
    seg, found = candidates(ones < 128)
    graph = cut_graph(found[0].whole, seg.labels, seg.line_heights[0], parts=4)
    assert {(10, 13), (13, 17), (17, 21), (21, 25)} <= set(graph)  # the path through the touching pixels
    assert all(b - a <= 1.3 * seg.line_heights[0] for a, b in graph)  # no piece wider than a digit may be


def test_a_reader_from_python_takes_the_count_too(synthetic_mlp_run):
    from digitlab import load_reader

    reading = load_reader(synthetic_mlp_run).read(bars([10, 25, 40]), digits="5-9")
    assert reading.unsure and reading.reason.startswith("expected 5-9 digits, found 3")


# --- the combined reader: both methods, one answer -------------------------------------------------------


def frame_probs(classes, sure=0.9) -> np.ndarray:
    """(frames, 11) probabilities: `sure` on each frame's class (10 is the blank), the rest spread evenly."""
    p = np.full((len(classes), 11), (1 - sure) / 10, np.float32)
    p[np.arange(len(classes)), classes] = sure
    return p


def a_reading(text, unsure=False, confidence=0.9):
    from digitlab.predict.results import Reading

    return Reading(
        text,
        tuple(text.split("\n")),
        confidence,
        unsure,
        "why" if unsure else None,
        (),
        np.zeros((0, 28, 28), np.uint8),
        (40, 20),
    )


def test_ctc_log_likelihood_sums_every_path():
    import itertools

    from digitlab.predict.ctc import log_likelihood

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 5)  # 5 frames, 3 digits and the blank (3)
    totals = {}
    for path in itertools.product(range(4), repeat=5):  # every path, collapsed as CTC does
        text = tuple(c for k, c in enumerate(path) if c != 3 and (k == 0 or c != path[k - 1]))
        totals[text] = totals.get(text, 0.0) + np.prod(p[np.arange(5), path])
    for text, total in totals.items():
        assert log_likelihood(p, text) == pytest.approx(np.log(total), abs=1e-5)
    assert log_likelihood(p, (0, 0, 0, 0)) == -np.inf  # 0_0_0_0 needs 7 frames


def combined_of(texts_and_sources, probs, line_text, segment_text, temperature=1.0):
    """Candidates as `reading.candidates` makes them, from hand-built frame probabilities of one line:
    (text, "line" or "segment", unsure) each; the first of each source is that reader's own reading."""
    from digitlab.predict.ctc import log_likelihood
    from digitlab.predict.reading import Candidates

    scored = tuple(
        (a_reading(t, unsure), how, (log_likelihood(probs, [int(c) for c in t], temperature),))
        for t, how, unsure in texts_and_sources
    )
    line = next(r for r, how, _ in scored if how == "line")
    segment = next(r for r, how, _ in scored if how == "segment")
    assert (line.text, segment.text) == (line_text, segment_text)
    return Candidates(line, segment, scored)


def test_touching_ones_merged_by_segmentation_are_read_as_two_by_the_combination():
    from digitlab.predict.reading import Combining, combine

    b = 10
    probs = frame_probs([b, 1, 1, b, 1, b, b], sure=0.97)  # the line model sees two 1s, clearly
    c = combined_of([("11", "line", False), ("1", "segment", False), ("11", "segment", True)], probs, "11", "1")
    chosen = combine(c, Combining(segment_bonus=2.0))
    assert chosen.text == "11"
    assert chosen.unsure and chosen.reason == "the two readers disagree: 11 or 1"  # they disagreed
    # A large enough bonus for a sure segmentation keeps its reading.
    assert combine(c, Combining(segment_bonus=50.0)).text == "1"


def test_overlapping_zeros_the_segmentation_cut_wrong_are_read_by_the_line_model():
    from digitlab.predict.reading import Combining, combine

    b = 10
    probs = frame_probs([b, 0, 0, b, 0, 0, b])  # "00" overlapping: the line model sees two zeros
    c = combined_of([("00", "line", False), ("06", "segment", True)], probs, "00", "06")
    assert combine(c, Combining(segment_bonus=50.0)).text == "00"  # an unsure segmentation gets no bonus


def test_agreement_is_sure_when_both_readers_are():
    from digitlab.predict.reading import Combining, combine

    probs = frame_probs([10, 4, 10, 7, 10])
    sure = combined_of([("47", "line", False), ("47", "segment", False)], probs, "47", "47")
    chosen = combine(sure)
    assert chosen.text == "47" and not chosen.unsure and chosen.reason is None
    assert chosen.confidence == pytest.approx(1 - 0.1 * 0.1)
    half = combined_of([("47", "line", True), ("47", "segment", False)], probs, "47", "47")
    chosen = combine(half, Combining(both_sure=True))
    assert chosen.unsure and chosen.reason == "the line model is unsure: why"
    assert not combine(half, Combining(both_sure=False)).unsure
    both = combined_of([("47", "line", True), ("47", "segment", True)], probs, "47", "47")
    assert combine(both, Combining(both_sure=False)).unsure


def test_every_reader_asks_for_another_photo_of_a_blank_page_in_uneven_light(line_digit_run):
    """`read` by segmentation, by the line model and by both: a blank page under a shadow is no reading, the
    reason saying the light was uneven; evenly lit blank paper is plain "no ink"."""
    from digitlab.predict import load_predictor
    from digitlab.predict.reading import read
    from digitlab.preprocess import NO_INK, UNEVEN_LIGHT

    both = load_predictor(line_digit_run)
    rows, cols = np.mgrid[0:120, 0:300]
    shadowed = (235 * (1 - 0.4 * (cols + 0.6 * rows > 150))).astype(np.uint8)
    for method in ("segment", "line", "combined"):
        reading = read(both, shadowed, method=method)
        assert reading.text is None and reading.unsure and reading.reason == UNEVEN_LIGHT, method
        assert read(both, np.full((120, 300), 235, np.uint8), method=method).reason == NO_INK, method


def test_a_line_run_with_a_digit_model_reads_with_both(line_digit_run, tiny_line_run, synthetic_cnn_run):
    from digitlab.predict import load_predictor
    from digitlab.predict.reading import choose_method, read

    both, line_only, digit = (load_predictor(r) for r in (line_digit_run, tiny_line_run, synthetic_cnn_run))
    assert choose_method(both, None) == "combined"
    assert choose_method(both, "segment") == "segment" and choose_method(both, "line") == "line"
    assert choose_method(line_only, None) == "line"
    with pytest.raises(DigitlabError, match="--method combined: .* no digit model"):
        choose_method(line_only, "combined")
    with pytest.raises(DigitlabError, match="--method combined: .*single-digit"):
        choose_method(digit, "combined")
    image = np.full((40, 120), 255, np.uint8)
    image[10:30, 20:24] = 0
    image[10:30, 60:64] = 0
    for method in (None, "segment", "line"):
        reading = read(both, image, method=method)
        assert reading.text is not None and reading.size == (120, 40)
    assert read(both, image, digits=2).text is not None


def test_several_lines_are_chosen_line_by_line():
    from digitlab.predict.ctc import log_likelihood
    from digitlab.predict.reading import Candidates, Combining, combine

    b = 10
    first = frame_probs([b, 1, b, 2, b], sure=0.99)  # clearly 12: the segmentation's 17 loses
    second = frame_probs([b, 3, b, 5, b], sure=0.6)  # 35 by a little: the sure segmentation's 34 wins
    second[3, 4] = 0.3
    line, segment = a_reading("12\n35"), a_reading("17\n34")
    scored = tuple(
        (r, how, tuple(log_likelihood(p, [int(c) for c in t]) for p, t in zip((first, second), r.lines)))
        for r, how in ((line, "line"), (segment, "segment"))
    )
    chosen = combine(Candidates(line, segment, scored), Combining(segment_bonus=2.0))
    assert chosen.text == "12\n34" and chosen.lines == ("12", "34")  # neither reader's whole text
    assert chosen.unsure and "disagree" in chosen.reason


def test_the_combined_reader_asks_no_count_past_the_most_a_reading_may_have(monkeypatch):
    """A line model that reads more digits than a reading may have (MAX_DIGITS, e.g. an untrained one over
    several lines) is not asked for the segmentation's count nor the segmentation for its: the two readings
    are compared as they are, instead of DigitCount raising a ValueError that `read` would not catch."""
    import numpy as np

    from digitlab.predict import reading as reading_module
    from digitlab.predict.count import MAX_DIGITS
    from digitlab.predict.results import Reading

    def made(text):
        return Reading(text, (text,), 0.5, True, "unsure", (), np.zeros((0, 28, 28), np.uint8), (256, 32))

    monkeypatch.setattr(reading_module, "line_inputs", lambda predictor, grey: object())
    monkeypatch.setattr(reading_module, "read_lines", lambda *a, **k: made("1" * (MAX_DIGITS + 1)))
    monkeypatch.setattr(reading_module, "ask", lambda *a, **k: None)
    monkeypatch.setattr(reading_module, "decide", lambda *a, **k: made("12"))
    monkeypatch.setattr(reading_module, "_ctc", lambda *a, **k: None)
    found = reading_module.candidates(None, None, np.zeros((32, 256)), (256, 32))
    assert [how for _, how, _ in found.scored] == ["line", "segment"]
