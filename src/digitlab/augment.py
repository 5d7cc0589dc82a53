"""Training-time augmentation: a fresh random warp per image per epoch.

Each warp is a random affine map (shift, rotation, zoom about the centre) plus, optionally, an elastic
distortion in the manner of Simard, Steinkraus & Platt (2003): a field of random displacements smoothed
with a Gaussian (sigma 4 px) and scaled by `elastic`. The two are composed into one map of source
coordinates and sampled once (bilinear, zero outside the image), so the image is interpolated only once.
Runs in NumPy/SciPy on the training batches, independent of the Keras backend.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
from scipy import ndimage as ndi

SIDE = 28
CENTRE = (SIDE - 1) / 2.0  # pixel centres run 0..27
ELASTIC_SIGMA = 4.0  # smoothing of the displacement field, pixels


def random_warp(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    shift: float = 0.0,
    rotate: float = 0.0,
    scale: float = 0.0,
    elastic: float = 0.0,
) -> np.ndarray:
    """Warp each (28, 28) image by its own random shift (pixels), rotation (degrees), zoom (fraction either
    way) and elastic distortion (strength alpha; 0: none)."""
    n, h, w = x.shape
    angle = np.deg2rad(rng.uniform(-rotate, rotate, n))[:, None, None]
    zoom = rng.uniform(1.0 - scale, 1.0 + scale, n)[:, None, None]
    tx, ty = rng.uniform(-shift, shift, (2, n, 1, 1))
    rows, cols = np.mgrid[0:h, 0:w].astype("float32") - CENTRE
    # Inverse map: each output pixel reads the source at the point rotated by -angle, divided by the zoom.
    c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
    src_cols = c * cols + s * rows + CENTRE - tx
    src_rows = -s * cols + c * rows + CENTRE - ty
    if elastic:
        field = rng.uniform(-1.0, 1.0, (2, n, h, w))
        field = ndi.gaussian_filter(field, sigma=(0, 0, ELASTIC_SIGMA, ELASTIC_SIGMA), mode="constant") * elastic
        src_rows = src_rows + field[0]
        src_cols = src_cols + field[1]
    batch = np.broadcast_to(np.arange(n, dtype="float32")[:, None, None], (n, h, w))
    coords = np.stack([batch, np.broadcast_to(src_rows, (n, h, w)), np.broadcast_to(src_cols, (n, h, w))])
    return ndi.map_coordinates(x.astype("float32"), coords, order=1, mode="constant", cval=0.0)


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled batches of freshly warped training images, a new warp every epoch.

    Whole epochs are warped in chunks, off the training thread: the first epoch when its first batch is
    asked for, and each later one in a background thread while the one before it trains. Warping batch by
    batch inside the input pipeline doubled the epoch time on a 2-core CPU, and warping each epoch up front
    left one core idle for the ~5 s it takes for 48,000 digits (SciPy's warps release the GIL).
    `epochs` (the epochs that will be trained) keeps it from warping one nobody trains on.
    """

    CHUNK = 1024  # images warped per call: large enough to amortise, small enough to stay in cache

    def __init__(self, x, y, batch_size: int, *, seed: int, epochs: int | None = None, **warp):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.warp = warp
        self.rng = np.random.default_rng(seed)  # used by one warp at a time, in epoch order: reproducible
        self.epochs_left = epochs
        self.epoch = self.upcoming = None
        self.executor = None

    def _warp_epoch(self) -> tuple[np.ndarray, np.ndarray]:
        order = self.rng.permutation(len(self.x))
        return np.concatenate(
            [
                random_warp(self.x[order[i : i + self.CHUNK]], self.rng, **self.warp)
                for i in range(0, len(order), self.CHUNK)
            ]
        ), self.y[order]

    def _start_epoch(self):
        self.epoch = self.upcoming.result() if self.upcoming is not None else self._warp_epoch()
        self.upcoming = None
        if self.epochs_left is not None:
            self.epochs_left -= 1
        if self.epochs_left is None or self.epochs_left > 0:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digitlab-warp")
            self.upcoming = self.executor.submit(self._warp_epoch)

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        if self.epoch is None:
            self._start_epoch()
        batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.epoch[0][batch], self.epoch[1][batch]

    def on_epoch_end(self):
        self.epoch = None
        if self.upcoming is None and self.executor is not None:  # the last epoch: nothing more to warp
            self.executor.shutdown(wait=False)
            self.executor = None
