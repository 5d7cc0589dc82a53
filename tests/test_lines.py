"""The line generator and the line normalisation (digitlab.data.synth.lines), on drawn stand-ins for MNIST digits."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab.config import TrainConfig
from digitlab.data.synth import lines
from digitlab.errors import DigitlabError
from digitlab.preprocess import line


def drawn_digits() -> tuple[np.ndarray, np.ndarray]:
    """Ten 28x28 digit-like drawings, ink bright on black as MNIST's: a bar (class 1) and rings and
    crosses of different sizes for the others."""
    images = []
    for k in range(10):
        img = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(img)
        if k == 1:
            draw.line([(14, 4), (13, 24)], fill=255, width=3)
        elif k % 2:
            draw.line([(6, 4), (22, 24)], fill=255, width=3)
            draw.line([(22, 4), (6, 24)], fill=255, width=3)
        else:
            draw.ellipse([8 - k // 4, 4, 20 + k // 4, 24], outline=255, width=3)
        images.append(np.asarray(img))
    return np.stack(images), np.arange(10)


X, Y = drawn_digits()


def test_lines_are_seeded_shaped_and_labelled():
    a, la = lines.make_lines(X, Y, 12, np.random.default_rng(3))
    b, lb = lines.make_lines(X, Y, 12, np.random.default_rng(3))
    c, _ = lines.make_lines(X, Y, 12, np.random.default_rng(4))
    assert a.shape == (12, line.LINE_HEIGHT, line.LINE_WIDTH) and a.dtype == np.uint8
    assert la.shape == (12, lines.MAX_DIGITS) and la.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    for row in la:  # digits first, then padding only
        length = int((row != lines.PAD_LABEL).sum())
        assert 1 <= length <= lines.MAX_DIGITS
        assert set(row[:length]) <= set(range(10)) and (row[length:] == lines.PAD_LABEL).all()
        assert lines.label_text(row) == "".join(map(str, row[:length]))


def test_lines_are_bright_ink_on_black_and_left_aligned():
    images, _ = lines.make_lines(X, Y, 8, np.random.default_rng(0))
    for image in images:
        assert image.max() == 255  # strong ink saturates, as in MNIST
        assert not image[:, : line.MARGIN].any() and not image[:, -line.MARGIN :].any()
        rows = np.flatnonzero(image.any(1))
        assert rows[-1] - rows[0] + 1 <= line.LINE_BOX
        assert (image == 0).mean() > 0.5  # black paper


def test_max_digits_bounds_the_length():
    _, labels = lines.make_lines(X, Y, 20, np.random.default_rng(1), max_digits=3)
    assert labels.shape == (20, 3)
    assert ((labels != lines.PAD_LABEL).sum(1) <= 3).all()


def test_neighbours_overlap_touch_and_stand_apart():
    rng = np.random.default_rng(5)
    gaps, thirds = [], []
    for _ in range(60):
        chosen = rng.integers(0, 10, 6)
        _, boxes = lines.compose(X[chosen], rng)
        widths = [b - a for a, b in boxes]
        gaps += [right[0] - left[1] for left, right in zip(boxes, boxes[1:])]
        thirds += [int(lines.OVERLAP * min(a, b)) for a, b in zip(widths, widths[1:])]
    gaps, thirds = np.array(gaps), np.array(thirds)
    assert (gaps >= -thirds).all()  # never more than a third of the narrower digit
    assert (gaps == -thirds)[thirds > 2].mean() > 0.05  # tight writers reach that bound
    assert (gaps < 0).mean() > 0.15  # overlapping ink boxes
    assert (gaps >= 8).mean() > 0.1  # wide gaps


def ink_heights(cover: np.ndarray, boxes: list) -> list[int]:
    """Rows of ink in each digit's columns (digits set apart, nothing joining them)."""
    return [int(np.ptp(np.flatnonzero((cover[:, a:b] > 0.1).any(1)))) + 1 for a, b in boxes]


def test_one_writer_per_line(monkeypatch):
    monkeypatch.setattr(lines, "JOIN", 0.0)
    rng = np.random.default_rng(9)
    same = np.repeat(X[0:1], 5, axis=0)  # one ring five times: only the writer makes them differ
    within, means = [], []
    for _ in range(30):
        writer = lines.Writer.draw(rng, gaps=(10, 12))
        writer = lines.Writer(**{**writer.__dict__, "uneven": False})
        cover, boxes = lines.compose(same, rng, writer=writer)
        heights = ink_heights(cover, boxes)
        within.append(max(heights) / min(heights))
        means.append(np.mean(heights))
    assert max(within) <= 1.2  # the same size along a line ...
    assert max(means) / min(means) >= 1.3  # ... and another writer's on another line
    uneven = lines.Writer(slant=0.0, scale=1.0, thickness=0.0, spacing=11, tilt=0.0, uneven=True)
    spread = []
    for _ in range(10):
        cover, boxes = lines.compose(same, rng, writer=uneven)
        heights = ink_heights(cover, boxes)
        spread.append(max(heights) / min(heights))
    assert np.mean(spread) > 1.3  # an uneven writer's sizes vary


def test_a_writer_slants_every_digit_alike(monkeypatch):
    monkeypatch.setattr(lines, "JOIN", 0.0)
    bar = np.repeat(X[1:2], 4, axis=0)  # an upright bar: its box widens with the slant
    for slant in (-0.3, 0.3):
        writer = lines.Writer(slant=slant, scale=1.0, thickness=0.0, spacing=10, tilt=0.0, uneven=False)
        cover, boxes = lines.compose(bar, np.random.default_rng(0), gaps=(10, 10), writer=writer)
        for a, b in boxes:
            rows = np.flatnonzero((cover[:, a:b] > 0.5).any(1))
            top = np.flatnonzero(cover[rows[0], a:b] > 0.5).mean()
            bottom = np.flatnonzero(cover[rows[-1], a:b] > 0.5).mean()
            assert np.sign(top - bottom) == np.sign(slant)  # the top leans the writer's way


def test_compose_is_seeded():
    a, boxes_a = lines.compose(X[[3, 1, 4, 1, 5]], np.random.default_rng(12))
    b, boxes_b = lines.compose(X[[3, 1, 4, 1, 5]], np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert boxes_a == boxes_b


def test_some_neighbours_are_joined_by_a_stroke():
    rng = np.random.default_rng(2)
    ones = np.repeat(X[1:2], 2, axis=0)  # two bars set far apart: ink between them is a connecting stroke
    joined = 0
    for _ in range(60):
        cover, boxes = lines.compose(ones, rng)
        (_, a1), (b0, _) = boxes
        if b0 - a1 > 4:
            joined += bool((cover[:, a1 + 1 : b0 - 1] > 0.3).any())
    assert 0 < joined < 60


def test_on_paper_is_dark_ink_on_light_paper():
    cover = np.zeros((40, 100), np.float32)
    cover[10:30, 40:44] = 1.0
    grey = lines.on_paper(cover, np.random.default_rng(0))
    assert grey.dtype == np.uint8 and grey.shape == cover.shape
    assert grey[10:30, 40:44].mean() < grey[:, :30].mean() - 60


def test_normalize_line_scales_the_box_and_says_where_it_went():
    soft = np.zeros((50, 60), np.float32)
    soft[5:45, 10:20] = 1.0
    image, place = line.normalize_line(soft)
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    assert rows[-1] - rows[0] + 1 == line.LINE_BOX and cols[0] == line.MARGIN
    assert place.scale == pytest.approx(line.LINE_BOX / 40, rel=0.05)
    assert place.offset == (10.0, 5.0)
    # A line too long for the width is squeezed to fit, keeping its aspect ratio.
    wide = np.ones((20, 2000), np.float32)
    image, place = line.normalize_line(wide)
    cols = np.flatnonzero(image.any(0))
    assert cols[-1] + 1 == line.LINE_WIDTH - line.MARGIN
    assert np.flatnonzero(image.any(1)).size == round(20 * place.scale)


def test_normalize_line_without_ink_is_an_error():
    with pytest.raises(DigitlabError, match="no ink"):
        line.normalize_line(np.zeros((10, 10), np.float32))


def test_line_ink_keeps_a_thin_digit_beside_a_large_blob():
    # find_ink drops components small beside the largest; on a line a thin 1 beside joined digits stays.
    grey = np.full((60, 200), 230.0, np.float32)
    grey[10:50, 20:150] = 30.0  # a long joined blob of digits
    grey[12:48, 170:172] = 30.0  # a thin 1, 2 px wide: under 8 % of the blob's area
    ink = line.line_ink(grey)
    assert ink.mask[30, 170:172].all()
    assert line.line_ink(np.full((30, 30), 200.0, np.float32)) is None


def test_line_image_reads_dark_ink_on_paper():
    cover, _ = lines.compose(X[[3, 1, 4]], np.random.default_rng(0))
    image = line.line_image(lines.on_paper(cover, np.random.default_rng(1)))
    assert image.shape == (line.LINE_HEIGHT, line.LINE_WIDTH) and image.max() == 255


def test_bad_digits_are_refused():
    with pytest.raises(DigitlabError, match="make_lines"):
        lines.make_lines(X[:3], Y[:2], 1, np.random.default_rng(0))
    with pytest.raises(DigitlabError, match="max_digits"):
        lines.make_lines(X, Y, 1, np.random.default_rng(0), max_digits=11)


def test_validation_lines_come_from_the_validation_split(synthetic_dir):
    from digitlab.data import load_dataset, run_split, split_train_val

    cfg = TrainConfig(dataset="synthetic", limit=50, val_lines=5)
    split = run_split(cfg, synthetic_dir)
    ds = load_dataset("synthetic", data_dir=synthetic_dir)
    _, _, x_expected, y_expected = split_train_val(ds.x_train, ds.y_train, cfg.val_fraction, cfg.split_seed)
    np.testing.assert_array_equal(split.x_val, x_expected)
    np.testing.assert_array_equal(split.y_val, y_expected)
    assert len(split.x_train) == 50
    images, labels = lines.validation_lines(cfg, data_dir=synthetic_dir)
    again = lines.validation_lines(cfg, split)
    np.testing.assert_array_equal(images, again[0])  # the same lines for every run of the split
    assert set(labels[labels != lines.PAD_LABEL]) <= set(split.y_val.tolist())


def test_length_and_gaps_can_be_fixed():
    _, labels = lines.make_lines(X, Y, 6, np.random.default_rng(0), length=4)
    assert ((labels != lines.PAD_LABEL).sum(1) == 4).all()
    rng = np.random.default_rng(1)
    for _ in range(10):
        _, boxes = lines.compose(X[[0, 2, 4, 6]], rng, gaps=(-3, -1))  # rings: wide enough to overlap by 3
        assert all(-3 <= b[0] - a[1] <= -1 for a, b in zip(boxes, boxes[1:]))
    with pytest.raises(DigitlabError, match="length"):
        lines.make_lines(X, Y, 1, np.random.default_rng(0), max_digits=3, length=4)


def test_a_share_of_lines_carries_a_mark_in_place_of_a_digit():
    from digitlab.data.synth.nondigits import line_marks

    marks, kinds = line_marks("train", 40, seed=0)
    plain = lines.make_lines(X, Y, 6, np.random.default_rng(5))
    unmarked = lines.make_lines(X, Y, 6, np.random.default_rng(5), marks=marks, mark_share=0.0)
    np.testing.assert_array_equal(plain[0], unmarked[0])  # no share: the lines the same rng gives without
    a, la = lines.make_lines(X, Y, 8, np.random.default_rng(6), marks=marks, mark_share=1.0)
    b, lb = lines.make_lines(X, Y, 8, np.random.default_rng(6), marks=marks, mark_share=1.0)
    np.testing.assert_array_equal(a, b)  # seeded
    np.testing.assert_array_equal(la, lb)
    assert ((la == lines.MARK_LABEL).sum(1) == 1).all()  # one mark on every line, in place of a digit
    _, some = lines.make_lines(X, Y, 60, np.random.default_rng(7), marks=marks, mark_share=0.3, max_digits=2)
    assert 0.15 < (some == lines.MARK_LABEL).any(1).mean() < 0.45
    with pytest.raises(DigitlabError, match="mark_share"):
        lines.make_lines(X, Y, 1, np.random.default_rng(0), mark_share=0.5)  # a share, and no marks


def test_a_small_mark_keeps_its_distance_and_no_stroke_joins_it():
    dash = np.zeros((28, 28), np.uint8)
    dash[13:15, 9:19] = 255  # 10 px long: small
    items = np.stack([X[0], dash, X[2]])
    rng = np.random.default_rng(0)
    for _ in range(10):
        _, boxes = lines.compose(items, rng, gaps=(-3, -1), apart=1)
        assert all(b[0] - a[1] >= lines.MARK_GAP for a, b in zip(boxes, boxes[1:]))
