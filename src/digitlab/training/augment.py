"""Training-time augmentation: a fresh random warp per image per epoch.

Each warp is a random affine map (shift, rotation, zoom and shear about the centre) plus, optionally, an
elastic distortion in the manner of Simard, Steinkraus & Platt (2003): a field of random displacements
smoothed with a Gaussian (sigma 4 px) and scaled by `elastic`. The two are composed into one map of source
coordinates and sampled once (bilinear, zero outside the image), so the image is interpolated only once.
Then, as people's pens and cameras differ, a random change of stroke thickness (a share of a 1 px grey
dilation or erosion) and a random blur (what a low-resolution or out-of-focus picture leaves once
normalised). Runs in NumPy/SciPy on the training batches, independent of the Keras backend.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.training.epochs import EpochBatches

SIDE = 28
CENTRE = (SIDE - 1) / 2.0  # pixel centres run 0..27
ELASTIC_SIGMA = 4.0  # smoothing of the displacement field, pixels
CROSS = ndi.generate_binary_structure(2, 1)[None]  # 3x3 cross, one image at a time: a 1 px thicker stroke
BLUR_LEVELS = 4  # blur sigmas are drawn from this many levels, so that images are blurred in groups


def random_warp(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    shift: float = 0.0,
    rotate: float = 0.0,
    scale: float = 0.0,
    elastic: float = 0.0,
    shear: float = 0.0,
    thickness: float = 0.0,
    blur: float = 0.0,
) -> np.ndarray:
    """Warp each (28, 28) image by its own random shift (pixels), rotation (degrees), zoom (fraction either
    way), shear (slant: columns moved by up to this many px per px of height) and elastic distortion
    (strength alpha; 0: none); then thicken or thin its strokes by up to `thickness` (share of 1 px) and
    blur it with a Gaussian of sigma up to `blur` px (half of the images)."""
    n, h, w = x.shape
    angle = np.deg2rad(rng.uniform(-rotate, rotate, n))[:, None, None]
    zoom = rng.uniform(1.0 - scale, 1.0 + scale, n)[:, None, None]
    tx, ty = rng.uniform(-shift, shift, (2, n, 1, 1))
    slant = rng.uniform(-shear, shear, n)[:, None, None] if shear else np.zeros((n, 1, 1))
    # Inverse map: each output pixel reads the source at the point rotated by -angle, divided by the zoom,
    # moved sideways in proportion to its height (the slant).
    c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
    if elastic:
        rows, cols = np.mgrid[0:h, 0:w].astype("float32") - CENTRE
        src_cols = c * cols + s * rows + CENTRE - tx + slant * rows
        src_rows = -s * cols + c * rows + CENTRE - ty
        field = rng.uniform(-1.0, 1.0, (2, n, h, w))
        field = ndi.gaussian_filter(field, sigma=(0, 0, ELASTIC_SIGMA, ELASTIC_SIGMA), mode="constant") * elastic
        batch = np.broadcast_to(np.arange(n, dtype="float32")[:, None, None], (n, h, w))
        coords = np.stack([batch, src_rows + field[0], src_cols + field[1]])
        out = ndi.map_coordinates(x.astype("float32"), coords, order=1, mode="constant", cval=0.0)
    else:
        out = _affine(x, c.ravel(), s.ravel(), slant.ravel(), tx.ravel(), ty.ravel())
    if thickness:
        amount = rng.uniform(-thickness, thickness, n)[:, None, None]
        grown = np.where(amount > 0, ndi.grey_dilation(out, footprint=CROSS), ndi.grey_erosion(out, footprint=CROSS))
        out = out + np.abs(amount) * (grown - out)
    if blur:
        level = rng.integers(-BLUR_LEVELS, BLUR_LEVELS + 1, n)  # half of them (level <= 0) stay sharp
        for k in range(1, BLUR_LEVELS + 1):
            m = level == k
            if m.any():
                out[m] = ndi.gaussian_filter(out[m], sigma=(0, blur * k / BLUR_LEVELS, blur * k / BLUR_LEVELS))
    return out


def _affine(x, c, s, slant, tx, ty) -> np.ndarray:
    """The same inverse map without a displacement field, one Pillow affine transform per image: about
    3x faster than sampling a map of coordinates. Pillow's coordinates put pixel i's centre at i + 0.5,
    so the image's centre is at SIDE / 2 there."""
    h, w = x.shape[1:]
    mid = SIDE / 2.0
    out = np.empty((len(x), h, w), np.float32)
    for i, image in enumerate(x.astype("float32")):
        a, b, d, e = c[i], s[i] + slant[i], -s[i], c[i]  # source column = a*col + b*row + ..., row = d*col + e*row
        matrix = (a, b, mid - tx[i] - (a + b) * mid, d, e, mid - ty[i] - (d + e) * mid)
        warped = Image.fromarray(image, "F").transform(
            (w, h), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR
        )
        out[i] = np.asarray(warped)
    return out


class AugmentedBatches(EpochBatches):
    """Shuffled batches of freshly warped training images, a new warp and order every epoch, warped in
    chunks off the training thread (EpochBatches). The one generator is used by one epoch at a time, in
    epoch order, so the warps are reproducible from `seed`. `epochs`: the epochs that will be trained
    (None: no end)."""

    CHUNK = 1024  # images warped per call: large enough to amortise, small enough to stay in cache

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int, epochs: int | None = None, **warp: float
    ) -> None:
        super().__init__(len(x), batch_size, epochs=epochs, name="warp")
        self.x, self.y = x, y
        self.warp = warp
        self.rng = np.random.default_rng(seed)

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        order = self.rng.permutation(len(self.x))
        return np.concatenate(
            [
                random_warp(self.x[order[i : i + self.CHUNK]], self.rng, **self.warp)
                for i in range(0, len(order), self.CHUNK)
            ]
        ), self.y[order]
