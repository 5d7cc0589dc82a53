"""The wild validation set: reproducible, every column present, and each transformation doing what its
name says on properties that can be measured. Synthetic digits (conftest's set, and plain bars) keep it
fast; one integration test uses MNIST's real validation split."""

import numpy as np
import pytest

from digitlab.data import load_dataset
from digitlab.data.synth import wild
from digitlab.errors import DigitlabError

COLOUR_COLUMNS = ("colour", "chalkboard")


@pytest.fixture(scope="module")
def synthetic_val(synthetic_dir):
    ds = load_dataset("synthetic", data_dir=synthetic_dir)
    return ds.x_train[:40], ds.y_train[:40]


@pytest.fixture(scope="module")
def built(synthetic_val):
    return wild.build_wild(*synthetic_val, per_column=12, seed=3)


def bars(n=30):
    """Vertical bars 20 px tall and 3 px wide in a 28 px frame, MNIST's way round (ink bright)."""
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 4:24, 13:16] = 255
    return x, np.ones(n, np.uint8)


def ink(images, level=128):
    """Dark ink on light paper -> bool ink masks."""
    return np.asarray(images) < level


def slope(mask):
    """Columns per row of the ink's centre line (0 for an upright bar; positive leans the top left)."""
    rows = np.flatnonzero(mask.any(1))
    centres = [np.flatnonzero(mask[r]).mean() for r in rows]
    return float(np.polyfit(rows, centres, 1)[0])


def test_every_column_present_with_shapes_and_dtypes(built):
    assert tuple(built) == wild.COLUMNS
    labels = built["clean"][1]
    for name, (images, y) in built.items():
        side = wild.BIG_SIDE if name in wild.BIG_CANVAS else wild.SIDE
        shape = (12, side, side, 3) if name in COLOUR_COLUMNS else (12, side, side)
        assert images.shape == shape and images.dtype == np.uint8, name
        np.testing.assert_array_equal(y, labels)  # the same digits, in the same order, in every column


def test_same_seed_same_arrays_different_seed_different(synthetic_val, built):
    again = wild.build_wild(*synthetic_val, per_column=12, seed=3)
    other = wild.build_wild(*synthetic_val, per_column=12, seed=4)
    for name in wild.COLUMNS:
        np.testing.assert_array_equal(again[name][0], built[name][0])
        assert not np.array_equal(other[name][0], built[name][0]), name


def test_a_subset_of_columns_gives_the_same_images(synthetic_val, built):
    subset = wild.build_wild(*synthetic_val, per_column=12, seed=3, columns=("gradient", "slant"))
    assert tuple(subset) == ("gradient", "slant")
    for name in subset:
        np.testing.assert_array_equal(subset[name][0], built[name][0])


def test_per_column_is_capped_by_the_digits_there_are(synthetic_val):
    out = wild.build_wild(*synthetic_val, per_column=500, columns=("clean",))
    assert len(out["clean"][0]) == len(synthetic_val[0])
    assert sorted(out["clean"][1].tolist()) == sorted(synthetic_val[1].tolist())  # each digit once


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"per_column": 0}, "per_column: expected a positive integer, got 0"),
        ({"columns": ("clean", "fog")}, "columns: expected names from clean, .*, got fog"),
    ],
)
def test_bad_options_are_named(synthetic_val, kwargs, match):
    with pytest.raises(DigitlabError, match=match):
        wild.build_wild(*synthetic_val, **kwargs)


def test_bad_images_are_refused():
    with pytest.raises(DigitlabError, match=r"build_wild: expected images \(n, h, w\) and n labels"):
        wild.build_wild(np.zeros((3, 28), np.uint8), np.zeros(3, np.uint8))


def test_preprocessing_takes_every_column(built):
    out = wild.preprocess_wild(built)
    assert tuple(out) == wild.COLUMNS
    for name, (digits, labels, reasons) in out.items():
        assert digits.shape == (12, 28, 28) and digits.dtype == np.uint8, name
        np.testing.assert_array_equal(labels, built[name][1])
        assert len(reasons) == 12 and all(r is None or isinstance(r, str) for r in reasons)
        assert all(d.max() == 255 for d, r in zip(digits, reasons) if r is None)  # ink reaches the model


def test_clean_is_dark_ink_on_white_and_chalkboard_light_on_dark():
    from digitlab.preprocess import preprocess

    out = wild.build_wild(*bars(4), columns=("clean", "chalkboard"))
    clean, board = out["clean"][0], out["chalkboard"][0]
    assert clean[:, 0, 0].tolist() == [255] * 4 and clean.min() == 0
    luma = board @ np.array([0.299, 0.587, 0.114])
    assert luma[:, :5, :5].max() < 100 and luma[:, 75:85, 75:85].mean() > 150  # board corner, chalk bar
    assert preprocess(clean[0]).inverted and not preprocess(board[0]).inverted


def test_slant_shears_a_vertical_bar_and_rotation_turns_it():
    out = wild.build_wild(*bars(), columns=("clean", "slant", "rotate"))
    assert all(abs(slope(m)) < 0.02 for m in ink(out["clean"][0]))
    shears = np.array([slope(m) for m in ink(out["slant"][0])])
    lo, hi = wild.SLANT
    assert np.all((np.abs(shears) > lo - 0.03) & (np.abs(shears) < hi + 0.03))
    assert (shears > 0).any() and (shears < 0).any()  # both ways
    angles = np.degrees(np.arctan(np.abs([slope(m) for m in ink(out["rotate"][0])])))
    assert np.all((angles > wild.ROTATION[0] - 1.5) & (angles < wild.ROTATION[1] + 1.5))


def test_thin_and_thick_change_the_stroke_width():
    out = wild.build_wild(*bars(), columns=("clean", "thin", "thick"))
    middle = wild.SIDE // 2

    def widths(name):
        return ink(out[name][0])[:, middle].sum(1)

    assert np.all(widths("clean") == 15)  # 3 px at 5x
    assert np.all((widths("thin") >= 1) & (widths("thin") <= wild.THIN_PEN[1] + 1))
    lo, hi = np.array(wild.THICK_PEN) * wild.DIGIT
    assert np.all((widths("thick") >= lo - 1) & (widths("thick") <= hi + 1))


@pytest.mark.parametrize(
    ("name", "sizes"), [("large", wild.LARGE), ("small", wild.SMALL), ("off_centre", wild.OFF_CENTRE)]
)
def test_size_and_place_on_the_big_canvas(name, sizes):
    images = wild.build_wild(*bars(), columns=(name,))[name][0]
    for mask in ink(images):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert rows[0] > 0 and cols[0] > 0 and rows[-1] < wild.BIG_SIDE - 1 and cols[-1] < wild.BIG_SIDE - 1
        share = (rows[-1] - rows[0] + 1) / wild.BIG_SIDE
        assert sizes[0] - 0.02 <= share <= sizes[1] + 0.02
        if name == "off_centre":  # the bar's centre lies in the outer part of the canvas on each axis
            centre = np.array([rows.mean(), cols.mean()]) / wild.BIG_SIDE
            assert np.all(np.abs(centre - 0.5) > 0.15)


def high_frequency_share(images, cycles=13):
    """Share of each image's spectral power (mean removed) above `cycles` per image side."""
    a = 255.0 - np.asarray(images, float)
    power = np.abs(np.fft.fft2(a - a.mean(axis=(1, 2), keepdims=True))) ** 2
    k = np.fft.fftfreq(a.shape[1]) * a.shape[1]
    return power[:, np.hypot(k[:, None], k[None, :]) > cycles].sum(1) / power.sum((1, 2))


def test_low_resolution_has_no_detail_above_its_sampling():
    out = wild.build_wild(*bars(), columns=("clean", "low_res", "blur"))
    # The coarsest grid holds 26 px across the canvas (16 px on the digit): 13 cycles at most.
    clean = high_frequency_share(out["clean"][0])
    assert np.all(high_frequency_share(out["low_res"][0]) < clean / 4)
    assert np.all(high_frequency_share(out["blur"][0]) < clean / 4)


def test_gradient_and_shadow_make_the_paper_uneven():
    out = wild.build_wild(*bars(), columns=("gradient", "shadow", "clean"))
    corners = out["gradient"][0][:, [0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    assert np.all(corners.max(1) - corners.min(1) >= 60)
    assert corners.min() >= wild.GRADIENT_DARK[0] - 1 and corners.max() <= wild.GRADIENT_LIGHT[1] + 1
    paper = out["clean"][0] == 255  # where the clean image has no ink at all
    for image, where in zip(out["shadow"][0], paper):
        levels = image[where].astype(float)
        assert levels.min() / levels.max() < 0.75  # a band of shadow across the paper


def test_noise_and_jpeg_roughen_the_paper():
    out = wild.build_wild(*bars(), columns=("noise_jpeg",))["noise_jpeg"][0]
    paper = out[:, :20, :20].reshape(len(out), -1).astype(float)
    # The clean column's paper is flat (std 0); strong JPEG smooths some of the noise away again.
    assert np.all(paper.std(1) > 1) and np.median(paper.std(1)) > 4
    assert np.all(paper.mean(1) > wild.NOISE_PAPER[0] - 10)


def test_colour_is_coloured_ink_on_coloured_paper():
    images = wild.build_wild(*bars(), columns=("colour",))["colour"][0].astype(float)
    luma = images @ np.array([0.299, 0.587, 0.114])
    paper, ink_ = images[:, 0, 0], images[:, 80, 80]  # a corner, the bar's middle
    assert np.all(luma[:, 0, 0] - luma[:, 80, 80] > 80)
    assert np.ptp(paper, axis=1).max() > 60 and np.ptp(ink_, axis=1).max() > 60  # not all grey


@pytest.mark.slow
def test_real_validation_digits(mnist):
    from digitlab.config import TrainConfig
    from digitlab.data import run_split, split_train_val

    split = run_split(TrainConfig())
    x_val, y_val = split.x_val, split.y_val
    _, _, x_expected, y_expected = split_train_val(mnist.x_train, mnist.y_train, 0.2, seed=42)
    np.testing.assert_array_equal(x_val, x_expected)  # exactly the split training holds out
    np.testing.assert_array_equal(y_val, y_expected)
    out = wild.preprocess_wild(wild.build_wild(x_val, y_val, per_column=100, seed=0))
    chosen = np.random.default_rng(0).choice(len(x_val), 100, replace=False)
    digits, labels, reasons = out["clean"]
    np.testing.assert_array_equal(labels, y_val[chosen])
    assert reasons.count(None) == 100
    # The clean column comes back through preprocessing close to the MNIST digit it was drawn from.
    a, b = digits.reshape(100, -1).astype(float), x_val[chosen].reshape(100, -1).astype(float)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    assert np.median(r) > 0.9
    for name in wild.COLUMNS:
        assert sum(r is None for r in out[name][2]) >= 95, name  # nearly every digit reaches the model
