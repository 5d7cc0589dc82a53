"""The IDX file format (LeCun's MNIST files): read, write, and check the structure of a split."""

from __future__ import annotations

import gzip
import math
import os
import re
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
MAX_IDX_BYTES = 2 << 30  # 2 GiB, decompressed: 45x MNIST's training images; what a .gz may inflate to at most
MAX_DIMS = 32  # the most dimensions numpy 1 gives an array (numpy 2: 64)
SHOWN_DIMS = 6  # sizes a message prints before "... N dimensions"
_IN_CHUNK = 1 << 16  # compressed bytes handed to zlib at a time
_OUT_CHUNK = 1 << 20  # decompressed bytes taken from zlib at a time: a bomb never inflates far past its bound
_NONZERO = re.compile(rb"[^\x00]")  # zero padding may follow a gzip member, as gzip.decompress allows


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
            f"{where}: cannot store shape {shape_text(array.shape)} in IDX; expected 1 to 255 dimensions "
            "each below 2**32"
        )
    header = bytes((0, 0, code, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def read_bytes(path: Path) -> bytearray:
    """The file's bytes, decompressed if it is gzip; a bytearray so arrays over it are writable."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_IDX_BYTES:
                raise DataError(f"{path}: {size:,} bytes; expected at most {MAX_IDX_BYTES:,} for an IDX file")
            data = bytearray(size)
            f.readinto(data)  # one read, no copy: the cache path must stay fast
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[:2] == b"\x1f\x8b":  # gzip magic; an IDX file starts with two zero bytes instead
        return gunzip(data, str(path))
    return data


def gunzip(data: bytes | bytearray, where: str) -> bytearray:
    """Decompress gzip data (one member or several, as gzip.decompress reads them), stopping as soon as
    the output passes the size its IDX header declares, or MAX_IDX_BYTES: a small file that inflates to
    gigabytes is refused after a megabyte or so, not read into memory."""
    view = memoryview(data)
    out = bytearray()
    header = None  # (dtype, shape, size in bytes) once the output holds the whole IDX header
    limit = MAX_IDX_BYTES
    pos = 0  # bytes of `data` handed to zlib so far
    try:
        while True:
            inflater = zlib.decompressobj(wbits=31)  # 31: one gzip member, its header and CRC checked
            while not inflater.eof:
                if inflater.unconsumed_tail:
                    chunk = inflater.unconsumed_tail
                else:
                    chunk = view[pos : pos + _IN_CHUNK]
                    pos += len(chunk)
                piece = inflater.decompress(chunk, min(limit - len(out) + 1, _OUT_CHUNK))
                if not piece and not chunk:
                    raise EOFError("the data ends inside a gzip member")
                out += piece
                if header is None:
                    header = _declared(out, where, partial=True)
                    if header is not None:
                        limit = header[2]
                if len(out) > limit:
                    raise DataError(_too_long(where, header, limit))
            pos -= len(inflater.unused_data)
            nonzero = _NONZERO.search(view, pos)
            if nonzero is None:
                return out
            pos = nonzero.start()  # another member follows
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where}: broken gzip data ({e})") from None


def _too_long(where: str, header, limit: int) -> str:
    if header is None:
        return f"{where}: decompresses to more than {limit:,} bytes"
    dtype, shape, size = header
    return (
        f"{where}: trailing bytes: the header needs {size:,} bytes (shape {shape_text(shape)} of {dtype.name}), "
        "the decompressed data has more"
    )


def shape_text(shape) -> str:
    """A shape for a message: at most SHOWN_DIMS sizes, then how many dimensions there are."""
    shape = tuple(int(n) for n in shape)
    if len(shape) <= SHOWN_DIMS:
        return str(shape)
    return "(" + ", ".join(map(str, shape[:SHOWN_DIMS])) + f", ... {len(shape)} dimensions)"


def _declared(data: bytes | bytearray, where: str, partial: bool = False):
    """(dtype, shape, total size in bytes) that the IDX header at the start of `data` declares. With
    `partial`, None while `data` holds less than the header (a stream being decompressed)."""
    if len(data) < 4:
        if partial:
            return None
        raise DataError(f"{where}: {len(data)} bytes is too short for an IDX file (4-byte magic number)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{where}: bad magic number 0x{bytes(data[:4]).hex()}; an IDX file starts with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(
            f"{where}: unknown IDX dtype code 0x{code:02X}; expected one of "
            + ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        )
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{where}: the IDX header has {ndim} dimensions; expected 1 to {MAX_DIMS}")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        if partial:
            return None
        raise DataError(f"{where}: truncated: the header's {ndim} sizes need {offset} bytes, the file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", bytes(data[4:offset]))
    dtype = IDX_DTYPES[code]
    size = offset + math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    if size > MAX_IDX_BYTES:
        raise DataError(
            f"{where}: the header declares shape {shape_text(shape)} of {dtype.name}, {size:,} bytes; "
            f"expected at most {MAX_IDX_BYTES:,} ({MAX_IDX_BYTES / 2**30:g} GiB)"
        )
    return dtype, shape, size


def parse_idx(data: bytes | bytearray, where: str) -> np.ndarray:
    """Check an IDX header against the data's length and view the data as an array."""
    dtype, shape, size = _declared(data, where)
    if len(data) != size:
        what = "truncated" if len(data) < size else "trailing bytes"
        raise DataError(
            f"{where}: {what}: the header needs {size:,} bytes (shape {shape_text(shape)} of {dtype.name}), "
            f"the file has {len(data):,}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * len(shape)).reshape(shape)
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
            f"{images_where}: images have shape {shape_text(images.shape)}; "
            f"expected (N, {image_shape[0]}, {image_shape[1]})"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{images_where}: images are {images.dtype}; expected uint8")
    if labels.ndim != 1:
        raise DataError(f"{labels_where}: labels have shape {shape_text(labels.shape)}; expected (N,)")
    if labels.dtype != np.uint8:
        raise DataError(f"{labels_where}: labels are {labels.dtype}; expected uint8")
    if len(images) != len(labels):
        raise DataError(
            f"{images_where} holds {len(images):,} images but {labels_where} holds {len(labels):,} "
            "labels; expected the same count"
        )
    if labels.size and labels.max() >= num_classes:
        i = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{labels_where}: label {labels[i]} at index {i:,} is out of range; expected 0-{num_classes - 1}"
        )
