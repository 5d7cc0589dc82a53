"""Composed numbers (`digitlab.data.synth.numbers`): seeded, each subset what it says; the string figures; and the
section writer the bench scripts share (bench/_sections.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from digitlab.data.synth.numbers import (
    CLOSE_GAP,
    LENGTHS,
    PAPER_SCALE,
    SEPARATED_GAP,
    SIZE_RANGE,
    SLANT,
    SUBSETS,
    TOUCHING_GAP,
    compose_numbers,
    score_readings,
)
from digitlab.errors import DigitlabError
from digitlab.metrics import edit_distance

INK_TOP, INK_BOTTOM = 4, 24  # rows of the blocks' ink: 20 px, as an MNIST digit's


def block_digits(n_per_class: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of clean 28x28 'digits', white on black as MNIST: class k is a solid block 3 + k px
    wide, so its width names it. (conftest's synthetic set has noise in every pixel, so no gap would show.)"""
    y = np.repeat(np.arange(10, dtype=np.uint8), n_per_class)
    x = np.zeros((len(y), 28, 28), np.uint8)
    for i, k in enumerate(y):
        x[i, INK_TOP:INK_BOTTOM, 10 : 13 + k] = 255
    return x, y


def ink_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(int), 0]))
    return list(zip(edges[::2], edges[1::2]))


@pytest.fixture(scope="module")
def digits():
    return block_digits()


@pytest.mark.parametrize("subset", SUBSETS)
def test_the_same_seed_gives_the_same_numbers_and_another_seed_others(digits, subset):
    x, y = digits
    a, b = compose_numbers(x, y, subset, 8, seed=3), compose_numbers(x, y, subset, 8, seed=3)
    assert [n.text for n in a] == [n.text for n in b]
    assert all(np.array_equal(p.image, q.image) for p, q in zip(a, b))
    other = compose_numbers(x, y, subset, 8, seed=4)
    assert [n.text for n in other] != [n.text for n in a]
    assert all(n.image.dtype == np.uint8 and n.subset == subset for n in a)


def test_lengths_take_turns_and_the_text_names_the_digits_drawn(digits):
    x, y = digits
    numbers = compose_numbers(x, y, "separated", 2 * len(LENGTHS), seed=0)
    assert [n.length for n in numbers] == list(LENGTHS) * 2
    for n in numbers:
        ink = n.image < 128  # dark ink on light paper
        widths = [b - a for a, b in ink_runs(ink.any(0))]
        assert "".join(str(w - 3) for w in widths) == n.text  # each block's width names its class
        assert n.image[0, 0] == 255 and n.image.shape[0] == 28 + 16  # MNIST's box and a margin above and below


@pytest.mark.parametrize(("subset", "gaps"), [("separated", SEPARATED_GAP), ("close", CLOSE_GAP)])
def test_gaps_between_digits_are_those_of_the_subset(digits, subset, gaps):
    x, y = digits
    seen = set()
    for n in compose_numbers(x, y, subset, 80, seed=1, lengths=(5,)):
        ink = (n.image < 128).any(0)
        runs = ink_runs(ink)
        between = [b[0] - a[1] for a, b in zip(runs, runs[1:])]
        assert all(gaps[0] <= g <= gaps[1] for g in between), between
        widths = sum(int(d) + 3 for d in n.text)
        total = runs[-1][1] - runs[0][0] - widths  # all the gaps, those of 0 px included
        assert 4 * gaps[0] <= total <= 4 * gaps[1]
        assert total == sum(between)  # the blocks that met had no gap
        seen.update(between)
        if len(runs) < 5:
            seen.add(0)  # two blocks met
    assert seen == set(range(gaps[0], gaps[1] + 1))  # every gap of the range occurs


def test_touching_digits_overlap_up_to_half_the_narrower_one(digits):
    x, y = digits
    spans, overlaps = 0, []
    for n in compose_numbers(x, y, "touching", 80, seed=2, lengths=(4,)):
        ink = (n.image < 128).any(0)
        widths = [int(d) + 3 for d in n.text]
        span = int(np.flatnonzero(ink)[-1] - np.flatnonzero(ink)[0] + 1)
        gaps = span - sum(widths)  # every gap summed: negative where the blocks overlap
        assert 3 * TOUCHING_GAP[0] <= gaps <= 3 * TOUCHING_GAP[1]
        spans += span < sum(widths)
        overlaps.append(gaps)
        assert span >= widths[0] and len(n.text) == 4
    assert spans > 40  # most numbers overlap somewhere
    assert min(overlaps) <= -9 and max(overlaps) >= -3


def test_sizes_vary_the_height_and_the_baseline(digits):
    x, y = digits
    heights, bottoms = set(), set()
    for n in compose_numbers(x, y, "sizes", 40, seed=2, lengths=(4,)):
        ink = n.image < 128
        for a, b in ink_runs(ink.any(0)):
            rows = np.flatnonzero(ink[:, a:b].any(1))
            heights.add(len(rows))
            bottoms.add(int(rows[-1]))
    low, high = SIZE_RANGE
    assert min(heights) >= round(low * 20) - 1 and max(heights) <= round(high * 20) + 1
    assert max(heights) - min(heights) >= 8 and len(bottoms) >= 8


def test_slanted_numbers_lean_by_the_subset_s_shear(digits):
    x, y = digits
    leans = []
    for n in compose_numbers(x, y, "slanted", 20, seed=5, lengths=(1,)):
        ink = n.image < 128
        rows = np.flatnonzero(ink.any(1))
        top, bottom = (float(np.flatnonzero(ink[r]).mean()) for r in (rows[0], rows[-1]))
        leans.append((top - bottom) / (rows[-1] - rows[0]))  # px right per row up
    assert all(SLANT[0] - 0.03 <= abs(v) <= SLANT[1] + 0.03 for v in leans), leans
    assert min(leans) < 0 < max(leans)  # both ways


def test_paper_numbers_are_enlarged_unevenly_lit_noisy_and_jpeg(digits):
    x, y = digits
    separated = compose_numbers(x, y, "separated", 6, seed=0)
    for n, flat in zip(compose_numbers(x, y, "paper", 6, seed=0), separated):
        assert n.image.shape[0] == PAPER_SCALE * flat.image.shape[0]
        paper = n.image[: PAPER_SCALE * 6]  # the top margin: paper only
        assert np.ptp(paper.astype(float).mean(0)) > 10 or np.ptp(n.image[:, :6].astype(float).mean(1)) > 10
        assert paper.std() > 1.0 and len(np.unique(n.image)) > 50  # noise and JPEG, not two levels
        assert n.image.min() < 100  # the ink is still dark


def test_lines_stack_two_or_three_numbers_of_the_length_top_to_bottom(digits):
    x, y = digits
    counts = set()
    for n in compose_numbers(x, y, "lines", 30, seed=6, lengths=(3,)):
        lines = n.text.split("\n")
        counts.add(len(lines))
        assert all(len(line) == 3 for line in lines)
        bands = ink_runs((n.image < 128).any(1))
        assert len(bands) == len(lines)
        for (a, b), line in zip(bands, lines):
            widths = [e - s for s, e in ink_runs((n.image[a:b] < 128).any(0))]
            assert "".join(str(w - 3) for w in widths) == line  # read top to bottom, left to right
    assert counts == {2, 3}


def test_bad_arguments_are_one_line_errors(digits):
    x, y = digits
    with pytest.raises(DigitlabError, match="subset: 'wavy' is not one of separated, close"):
        compose_numbers(x, y, "wavy", 1)
    with pytest.raises(DigitlabError, match="30 labels"):
        compose_numbers(x[:5], y, "close", 1)
    with pytest.raises(DigitlabError, match="lengths"):
        compose_numbers(x, y, "close", 1, lengths=(0,))


def test_edit_distance_and_the_string_figures():
    assert edit_distance("2026", "2026") == 0
    assert edit_distance("2026", "226") == 1 and edit_distance("2026", "20266") == 1
    assert edit_distance("2026", "7026") == 1 and edit_distance("12\n34", "1234") == 1
    assert edit_distance("", "12") == 2
    f = score_readings(["2026", "11", "345"], ["2026", "1", None], [False, True, True])
    assert f["count"] == 3 and f["string_accuracy"] == pytest.approx(1 / 3)
    assert f["digit_accuracy"] == pytest.approx(1 - (0 + 1 + 3) / 9)  # a missing reading: every digit wrong
    assert f["unsure"] == pytest.approx(2 / 3) and f["accepted_accuracy"] == 1.0
    assert score_readings(["1"], ["2"], [True])["accepted_accuracy"] is None
    with pytest.raises(DigitlabError, match="2 truths, 1 texts"):
        score_readings(["1", "2"], ["1"], [False])


# --- bench/_sections.py ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sections():
    path = Path(__file__).resolve().parents[1] / "bench" / "_sections.py"
    spec = importlib.util.spec_from_file_location("bench_sections", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_section_is_replaced_in_place_and_the_rest_kept(sections, tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    sections.write_section(path, "numbers", "## Numbers\n\nold")
    assert path.read_text() == "# Benchmarks\n\n<!-- numbers -->\n## Numbers\n\nold\n<!-- /numbers -->\n"
    sections.write_section(path, "benchmark", "## Speed\n\n1 s")
    path.write_text(path.read_text() + "\n<!-- bench/batch.py: begin -->\nbatch\n<!-- bench/batch.py: end -->\n")
    sections.write_section(path, "numbers", "## Numbers\n\nnew\n")
    text = path.read_text()
    assert "old" not in text and text.count("<!-- numbers -->") == 1
    assert text.index("new") < text.index("## Speed") < text.index("batch")  # in place, others untouched
    assert "<!-- benchmark -->\n## Speed\n\n1 s\n<!-- /benchmark -->" in text


def test_a_section_without_its_end_marker_is_an_error(sections):
    with pytest.raises(ValueError, match="section 'numbers': <!-- numbers --> has no <!-- /numbers -->"):
        sections.replace_section("# Benchmarks\n\n<!-- numbers -->\nhalf", "numbers", "x")
    with pytest.raises(ValueError, match="section name 'Two words'"):
        sections.markers("Two words")
