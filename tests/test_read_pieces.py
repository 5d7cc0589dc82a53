"""What `digitlab.read` asks the model: only the pieces `decide` can use, and the same reading as when
every piece of every cut is asked."""

import dataclasses

import numpy as np
import pytest

from digitlab.data.synth.numbers import SUBSETS, compose_numbers
from digitlab.predict import load_predictor
from digitlab.predict.reading import read
from digitlab.predict.segmented import SCORING, decide, hypotheses


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
