"""The IDX file format (LeCun's MNIST files): read, write, and check the structure of a split."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from digitlab import atomic
from digitlab.errors import DataError

# IDX dtype code -> numpy dtype; IDX data is big-endian.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into an array of its dtype (native byte order)."""
    return parse_idx(read_bytes(Path(path)), str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as an IDX file; gzip-compressed when the name ends in .gz."""
    path = Path(path)
    data = idx_bytes(np.asarray(array), str(path))
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    try:
        return atomic.write_bytes(path, data)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None


def idx_bytes(array: np.ndarray, where: str) -> bytes:
    """The IDX encoding of `array`: magic, big-endian uint32 sizes, big-endian data."""
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(
            f"{where}: cannot store dtype {array.dtype} in IDX; expected uint8, int8, int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255 or max(array.shape) >= 2**32:
        raise DataError(
            f"{where}: cannot store shape {array.shape} in IDX; expected 1 to 255 dimensions each below 2**32"
        )
    header = bytes((0, 0, code, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def read_bytes(path: Path) -> bytearray:
    """The file's bytes, decompressed if it is gzip; a bytearray so arrays over it are writable."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = bytearray(size)
            f.readinto(data)  # one read, no copy: the cache path must stay fast
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[:2] == b"\x1f\x8b":  # gzip magic; an IDX file starts with two zero bytes instead
        return gunzip(data, str(path))
    return data


def gunzip(data: bytes | bytearray, where: str) -> bytearray:
    try:
        return bytearray(gzip.decompress(data))
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where}: broken gzip data ({e})") from None


def parse_idx(data: bytes | bytearray, where: str) -> np.ndarray:
    """Check an IDX header against the data's length and view the data as an array."""
    if len(data) < 4:
        raise DataError(f"{where}: {len(data)} bytes is too short for an IDX file (4-byte magic number)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{where}: bad magic number 0x{bytes(data[:4]).hex()}; an IDX file starts with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(
            f"{where}: unknown IDX dtype code 0x{code:02X}; expected one of "
            + ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        )
    if ndim == 0:
        raise DataError(f"{where}: IDX header has 0 dimensions; expected 1 or more")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{where}: truncated header: {len(data)} bytes, the {ndim} sizes need {offset}")
    shape = struct.unpack(f">{ndim}I", bytes(data[4:offset]))
    dtype = IDX_DTYPES[code]
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise DataError(
            f"{where}: {len(data)} bytes but the header's shape {shape} of {dtype.name} needs {expected} ({what})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def check_split(
    images: np.ndarray,
    labels: np.ndarray,
    images_where: str,
    labels_where: str,
    image_shape: tuple[int, int],
    num_classes: int,
) -> None:
    """Images N x height x width uint8, labels N uint8 in 0..num_classes-1."""
    if images.ndim != 3 or images.shape[1:] != image_shape:
        raise DataError(
            f"{images_where}: images have shape {images.shape}; expected (N, {image_shape[0]}, {image_shape[1]})"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{images_where}: images are {images.dtype}; expected uint8")
    if labels.ndim != 1:
        raise DataError(f"{labels_where}: labels have shape {labels.shape}; expected (N,)")
    if labels.dtype != np.uint8:
        raise DataError(f"{labels_where}: labels are {labels.dtype}; expected uint8")
    if len(images) != len(labels):
        raise DataError(
            f"{images_where} holds {len(images)} images but {labels_where} holds {len(labels)} "
            "labels; expected the same count"
        )
    if labels.size and labels.max() >= num_classes:
        i = int(np.argmax(labels >= num_classes))
        raise DataError(f"{labels_where}: label {labels[i]} at index {i} is out of range; expected 0-{num_classes - 1}")
