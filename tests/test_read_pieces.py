"""What `digitlab.read` asks the model: only the pieces `decide` can use, and the same reading as when
every piece of every cut is asked; how many calls an image costs, by either method and through the server;
which runtime answers them."""

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from digitlab import runs
from digitlab.data.synth.numbers import SUBSETS, compose_numbers
from digitlab.predict import choose_runtime, load_predictor, onnx_runtime
from digitlab.predict.count import parse_digits
from digitlab.predict.reading import read
from digitlab.predict.segmented import SCORING, decide, hypotheses
from digitlab.preprocess import segment
from digitlab.serve import Service


def counting(predictor):
    """The predictor, its real forward pass recording how many images each call took."""
    calls = []

    def forward(x):
        calls.append(len(x))
        return predictor.forward(x)

    return dataclasses.replace(predictor, forward=forward), calls


def same_reading(a, b) -> None:
    assert (a.text, a.lines, a.unsure, a.reason, a.size) == (b.text, b.lines, b.unsure, b.reason, b.size)
    assert [(d.digit, d.box, d.line, d.unsure, d.reason) for d in a.digits] == [
        (d.digit, d.box, d.line, d.unsure, d.reason) for d in b.digits
    ]
    assert [d.confidence for d in a.digits] == pytest.approx([d.confidence for d in b.digits], abs=1e-5)
    np.testing.assert_array_equal(a.crops, b.crops)


def bars(widths: list[int]) -> np.ndarray:
    """Dark bars of these widths (px) on white paper, 40 px tall and 12 px apart."""
    image = np.full((64, 12 + sum(w + 12 for w in widths)), 255, np.uint8)
    x = 12
    for w in widths:
        image[12:52, x : x + w] = 0
        x += w + 12
    return image


def parts(candidate) -> set:
    return {p for cut in candidate.cuts for p in cut}


@pytest.mark.parametrize("threshold", [0.0, 1.01])  # nothing unsure; everything unsure
def test_cuts_are_asked_only_of_candidates_too_wide_or_read_unsurely(synthetic_mlp_run, threshold):
    """The wholes and the wide bar's cuts in one call; the narrow bars' cuts in a second only when the
    model is unsure of them (the run's own model, at a threshold that makes it sure or unsure)."""
    predictor = dataclasses.replace(load_predictor(synthetic_mlp_run), threshold=threshold)
    predictor, calls = counting(predictor)
    image = bars([30, 30, 90])  # two bars under a line height wide, one over two
    everything = hypotheses(predictor, image)  # every piece of every cut: what the tuner decides on
    assert calls == [len(everything.results)]
    calls.clear()
    seg = everything.seg
    (line,) = seg.lines
    narrow, wide = line[:2], line[2]
    assert wide.whole.width > SCORING.wide_from * seg.line_heights[0] and wide.cuts
    assert all(c.whole.width < SCORING.wide_from * seg.line_heights[0] and c.cuts for c in narrow)
    reading = read(predictor, image)
    second = [len(parts(narrow[0]) | parts(narrow[1]))] if threshold > 1 else []
    assert calls == [3 + len(parts(wide)), *second]
    same_reading(reading, decide(everything))


def test_a_sure_narrow_digit_is_asked_alone(synthetic_mlp_run):
    """One digit the model is sure of: one call with one image, as `predict` makes."""
    predictor, calls = counting(dataclasses.replace(load_predictor(synthetic_mlp_run), threshold=0.0))
    grid = np.zeros((28, 28), np.uint8)
    grid[2:8, 2:7] = 230  # class 0's block
    reading = read(predictor, grid)
    assert len(reading.digits) == 1 and calls == [1]


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_cuts_are_worked_out_only_for_candidates_whose_cuts_are_asked(synthetic_mlp_run, monkeypatch, threshold):
    """Proposing cuts is a third of segmenting: a candidate read surely whole, and no wider than one digit,
    never has its cuts worked out."""
    predictor = dataclasses.replace(load_predictor(synthetic_mlp_run), threshold=threshold)
    proposed = []
    propose = segment.propose_cuts
    monkeypatch.setattr(segment, "propose_cuts", lambda piece, *a: proposed.append(piece) or propose(piece, *a))
    reading = read(predictor, bars([30, 30, 90]))
    assert len(reading.digits) >= 3
    assert len(proposed) == (3 if threshold > 1 else 1)  # every bar when unsure of all; else the wide one


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_the_server_asks_the_model_once_per_number_and_once_more_for_cuts(synthetic_mlp_run, threshold):
    """/api/read's path (Service.read, its model calls under the service's lock): one call of every
    candidate of the image, a second only for the cuts of those read unsurely, a third only for a count
    of digits the reading did not meet; each call one batch, never one call per candidate."""
    service = Service.load(synthetic_mlp_run)
    service.predictor, calls = counting(service.predictor)  # the reader's calls go through it
    service.reader = dataclasses.replace(service.reader, threshold=threshold)
    image = png(bars([30, 30, 30, 30]))
    (body,) = service.read([image], ["image"])
    assert len(body["digits"]) >= 4
    assert calls[0] == 4 and len(calls) == (2 if threshold > 1 else 1)  # the four wholes, then their cuts
    calls.clear()
    found = len(body["digits"])
    (same,) = service.read([image], ["image"], digits=parse_digits(found, "digits"))  # the count met: no more
    assert len(calls) == (2 if threshold > 1 else 1) and same["text"] == body["text"]
    calls.clear()
    (more,) = service.read([image], ["image"], digits=parse_digits(found + 4, "digits"))
    assert len(calls) <= 3 and all(n > 1 for n in calls)  # the count's pieces: one more call, batched
    assert more["unsure"]
    service.pool.shutdown()


def test_a_line_run_reads_every_line_of_an_image_in_one_call(tiny_line_run):
    predictor, calls = counting(load_predictor(tiny_line_run))
    image = np.full((150, 200), 255, np.uint8)
    for top in (10, 60, 110):  # three lines of two bars
        image[top : top + 30, 40:48] = 0
        image[top : top + 30, 120:128] = 0
    reading = read(predictor, image)
    assert len(reading.lines) >= 2
    assert calls == [len(reading.lines)]  # one call, every line in it


def test_the_runtime_is_onnx_only_where_model_onnx_was_exported_from_model_keras_as_it_is(
    synthetic_mlp_run, tmp_path, monkeypatch
):
    """choose_runtime (the default of `read`, `predict` and `serve`): ONNX Runtime only for a model.onnx
    whose export record names the model.keras there now and passed its check; else Keras."""
    run = shutil.copytree(synthetic_mlp_run, tmp_path / "run")
    assert choose_runtime(run) == "keras"  # no model.onnx
    assert choose_runtime(run, "keras") == "keras" and choose_runtime(run, "onnx") == "onnx"  # as asked
    (run / runs.ONNX).write_bytes(b"an export")
    assert choose_runtime(run) == "keras"  # no export record: not known to be this model's
    metrics = runs.read_json(run / runs.METRICS)
    record = {"path": runs.ONNX, "passed": True, "source_sha256": onnx_runtime.sha256(run / runs.MODEL)}
    (run / runs.METRICS).write_text(json.dumps({**metrics, "exports": {"onnx": record}}))
    assert choose_runtime(run) == "onnx"
    (run / runs.METRICS).write_text(json.dumps({**metrics, "exports": {"onnx": {**record, "passed": False}}}))
    assert choose_runtime(run) == "keras"  # its check failed
    (run / runs.METRICS).write_text(json.dumps({**metrics, "exports": {"onnx": record}}))
    (run / runs.MODEL).write_bytes((run / runs.MODEL).read_bytes() + b"\0")  # trained again since
    assert choose_runtime(run) == "keras"
    (run / runs.MODEL).unlink()  # a deployment: model.onnx is all there is
    assert choose_runtime(run) == "onnx"
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "onnxruntime" else object())
    assert choose_runtime(run) == "keras"  # ONNX Runtime not installed: Keras says what is missing


def test_deciding_under_another_scoring_needs_every_piece(synthetic_mlp_run):
    predictor = load_predictor(synthetic_mlp_run)
    lazy = hypotheses(predictor, bars([6, 30]), SCORING)
    with pytest.raises(ValueError, match="every piece"):
        decide(lazy, dataclasses.replace(SCORING, wide_from=0.5))
    decide(lazy, dataclasses.replace(SCORING, ambiguous=0.1))  # the same pieces: fine


@pytest.mark.slow
def test_separated_mnist_digits_are_one_call_of_their_wholes(trained_run, mnist):
    predictor, calls = counting(load_predictor(trained_run))
    (number,) = [n for n in compose_numbers(mnist.x_test, mnist.y_test, "separated", 6) if n.length == 6]
    reading = read(predictor, number.image)
    if not reading.unsure:
        assert calls == [len(reading.digits)]
    assert sum(calls) < len(hypotheses(predictor, number.image).results)


@pytest.mark.slow
def test_reading_asks_less_and_reads_the_same_on_every_subset(trained_run, mnist):
    predictor = load_predictor(trained_run)
    for subset in SUBSETS:
        for number in compose_numbers(mnist.x_test, mnist.y_test, subset, 16, seed=5):
            same_reading(read(predictor, number.image), decide(hypotheses(predictor, number.image)))


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_the_read_answer_is_its_response_models_json(synthetic_mlp_run, threshold):
    """/api/read writes its answer with pydantic in one step, not through FastAPI's response model: the same
    JSON values (fields in the model's order, nothing else), for a number, an unsure one and a blank page."""
    from fastapi.testclient import TestClient

    from digitlab.serve import create_app
    from digitlab.serve.schemas import ReadDigit, Reading

    app = create_app(synthetic_mlp_run)
    service = app.state.service
    service.reader = dataclasses.replace(service.reader, threshold=threshold)
    client = TestClient(app)
    for image in (bars([30, 30, 90]), np.full((40, 90), 255, np.uint8)):
        data = png(image)
        r = client.post("/api/read", files={"file": ("n.png", data, "image/png")})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        (body,) = service.read([data], ["file"])
        assert r.json() == Reading.model_validate(body).model_dump(mode="json")
        assert list(r.json()) == list(Reading.model_fields)
        assert all(list(d) == list(ReadDigit.model_fields) for d in r.json()["digits"])  # no label, no reason
    service.pool.shutdown()
