"""Training-time augmentation: random affine warps (shift, rotation, scale), a new one per image per epoch.

Used by the accurate preset. The warp is `keras.ops.image.affine_transform` on whole batches (bilinear,
zero outside the image), so it runs in the backend's compiled kernels on any backend.
"""

from __future__ import annotations

import math

import keras
import numpy as np

SIDE = 28
CENTRE = (SIDE - 1) / 2.0  # pixel centres run 0..27


def random_affine(x: np.ndarray, rng: np.random.Generator, *, shift: float, rotate: float, scale: float) -> np.ndarray:
    """Warp each (28, 28) image by its own random shift (pixels), rotation (degrees) and scale (fraction)."""
    n = len(x)
    angle = np.deg2rad(rng.uniform(-rotate, rotate, n))
    zoom = rng.uniform(1.0 - scale, 1.0 + scale, n)
    tx, ty = rng.uniform(-shift, shift, (2, n))
    # Inverse map, output pixel (u, v) -> source (a0 u + a1 v + a2, b0 u + b1 v + b2): rotate by -angle,
    # divide by zoom, about the image centre, then shift.
    c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
    a2 = CENTRE - c * CENTRE - s * CENTRE - tx
    b2 = CENTRE + s * CENTRE - c * CENTRE - ty
    zeros = np.zeros(n)
    transform = np.stack([c, s, a2, -s, c, b2, zeros, zeros], axis=1).astype("float32")
    warped = keras.ops.image.affine_transform(
        x[..., None].astype("float32"), transform, interpolation="bilinear", fill_mode="constant",
        data_format="channels_last",
    )
    return keras.ops.convert_to_numpy(warped)[..., 0]


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled batches of freshly warped training images, a new warp every epoch."""

    def __init__(self, x, y, batch_size: int, *, shift: float, rotate: float, scale: float, seed: int):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.params = {"shift": shift, "rotate": rotate, "scale": scale}
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return random_affine(self.x[idx].astype("float32"), self.rng, **self.params), self.y[idx]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))
