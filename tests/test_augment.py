"""augment.random_warp: each warp does what it says, and the two sampling paths agree."""

import numpy as np
import pytest

from digitlab.training.augment import random_warp


def bar(n=8):
    """n images of a vertical bar, 2 px wide, rows 4-23, at the centre."""
    x = np.zeros((n, 28, 28), np.float32)
    x[:, 4:24, 13:15] = 255.0
    return x


def column_of_ink(image, row):
    return float((image[row] * np.arange(28)).sum() / image[row].sum())


def test_no_warp_is_the_identity():
    x = bar()
    assert np.array_equal(random_warp(x, np.random.default_rng(0)), x)


def test_shear_slants_a_vertical_bar():
    out = random_warp(bar(64), np.random.default_rng(0), shear=0.5)
    slants = [(column_of_ink(im, 22) - column_of_ink(im, 5)) / 17 for im in out]
    assert max(np.abs(slants)) > 0.35 and min(slants) < 0 < max(slants)  # both ways, up to the amount
    assert max(np.abs(slants)) <= 0.5 + 0.05


def test_thickness_thickens_and_thins():
    x = bar(64)
    out = random_warp(x, np.random.default_rng(0), thickness=1.0)
    ink = out.sum(axis=(1, 2)) / x[0].sum()
    assert ink.min() < 0.7 and ink.max() > 1.5


def test_blur_softens_half_the_images():
    x = bar(200)
    out = random_warp(x, np.random.default_rng(0), blur=1.0)
    blurred = (out.max(axis=(1, 2)) < 254.0) | ((out > 0) & (out < 254)).any(axis=(1, 2))
    assert 0.3 < blurred.mean() < 0.7


@pytest.mark.parametrize("warp", [{"rotate": 15.0}, {"shift": 2.0, "scale": 0.1, "shear": 0.3}])
def test_pillow_and_coordinate_map_paths_agree(warp):
    # Without an elastic field the warp goes through Pillow's affine transform; with one, through a
    # map of coordinates. A vanishing field must give the same images.
    rng = np.random.default_rng(3)
    x = np.zeros((16, 28, 28), np.float32)  # ink away from the edge, as in MNIST: the paths differ only
    x[:, 6:-6, 6:-6] = rng.uniform(0, 255, (16, 16, 16)) * (rng.uniform(size=(16, 16, 16)) > 0.5)  # there
    a = random_warp(x, np.random.default_rng(1), **warp)
    b = random_warp(x, np.random.default_rng(1), elastic=1e-9, **warp)
    assert np.abs(a - b).max() < 1e-2
