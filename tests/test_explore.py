"""digitlab.explore on a small synthetic data set, and `digitlab explore` through the CLI."""

import numpy as np
import pytest
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.data import Dataset, write_idx
from digitlab.errors import DataError
from digitlab.explore import explore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("digit", "samples_gray", "samples_color", "class_counts", "pixel_histogram")


def synthetic(n_train=30, n_test=10, class_names=tuple("0123456789")):
    rng = np.random.default_rng(0)
    return Dataset(
        name="synthetic",
        x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        y_train=(np.arange(n_train) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=(np.arange(n_test) % 10).astype(np.uint8),
        class_names=class_names,
        source="test",
        verified=False,
    )


def test_explore_writes_pngs_and_returns_the_raw_digit(tmp_path):
    ds = synthetic()
    result = explore(ds, tmp_path / "new" / "explore", index=7, n_samples=9)
    assert set(result["figures"]) == set(FIGURES)
    for name, path in result["figures"].items():
        assert path == tmp_path / "new" / "explore" / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in (tmp_path / "new" / "explore").iterdir()) == sorted(f"{n}.png" for n in FIGURES)
    assert result["raw"].shape == (28, 28) and result["raw"].dtype == np.uint8
    np.testing.assert_array_equal(result["raw"], ds.x_train[7])
    assert result["label"] == 7 and result["class_name"] == "7"
    assert result["counts"] == {"train": [3] * 10, "test": [1] * 10}


def test_explore_with_long_class_names_and_more_samples_than_images(tmp_path):
    names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    result = explore(synthetic(n_train=10, class_names=names), tmp_path, index=9, n_samples=25)
    assert result["class_name"] == "Ankle boot"
    assert all(p.is_file() for p in result["figures"].values())


def test_the_single_digit_is_drawn_with_a_colour_bar():
    from digitlab.explore import _digit_figure

    ds = synthetic()
    fig = _digit_figure(ds, 7)
    image_axes, colour_bar = fig.axes  # the image and its colour bar
    np.testing.assert_array_equal(image_axes.images[0].get_array(), ds.x_train[7])
    assert colour_bar.get_ylabel() == "pixel value" and "train image 7: 7" in image_axes.get_title()


@pytest.mark.parametrize("index", [-1, 30])
def test_explore_index_out_of_range(tmp_path, index):
    with pytest.raises(DataError, match=f"index {index} is out of range; expected 0 to 29"):
        explore(synthetic(), tmp_path, index=index)


def test_cli_explore(tmp_path):
    ds = synthetic()
    for name, array in (
        ("train-images-idx3-ubyte", ds.x_train),
        ("train-labels-idx1-ubyte", ds.y_train),
        ("t10k-images-idx3-ubyte", ds.x_test),
        ("t10k-labels-idx1-ubyte", ds.y_test),
    ):
        write_idx(tmp_path / "toy" / name, array)
    result = CliRunner().invoke(
        app,
        [
            "explore",
            "--dataset",
            "toy",
            "--data-dir",
            str(tmp_path / "toy"),
            "--index",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--samples",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "train image 3, label 3 (3), raw pixels:"
    assert lines[1] == " ".join(f"{v:3d}" for v in ds.x_train[3, 0])
    assert f"wrote {tmp_path / 'out' / 'pixel_histogram.png'}" in lines
