"""Shared fixtures, the only ones: test modules define none that another module imports.

`mnist` loads real, verified MNIST once per session from the user's cache (fetched if absent). The tiny
runs (an MLP, a CNN and a line model on the synthetic set) are each trained once per session; a test that
writes into one (evaluating, exporting, reporting, resuming) works on its own copy (`shutil.copytree`).
Under pytest-xdist (`-n 2`, as the project runs its suite) the workers share them: the first to need one
builds it under a lock, the others wait for it (`built_once`).
"""

import dataclasses
import fcntl
import os
import shutil
from pathlib import Path

import pytest


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder `name`, made by `build(path)` once for the whole test run: in this session's temporary
    folder in one process, or, under pytest-xdist, in the folder the workers share (the parent of each
    worker's), the first worker building it under a file lock while the others wait."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        path = tmp_path_factory.mktemp("shared") / name
        build(path)
        return path
    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when a worker dies
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a worker that failed while building left
            build(path)
            done.touch()
    return path


# About how many seconds each of the longest test files takes on the two cores (the whole suite with
# `--durations`), and what a test in any other file counts. The workers take whole files (`--dist loadfile`);
# handed out longest first, the last files left are short and both workers end at about the same time.
# xdist's own order, by number of tests, leaves long files of a few tests (the ladder, the JAX backend, the
# notebook) to the end, where one of them can keep one worker busy a minute after the other has stopped.
FILE_SECONDS = {
    "test_cli.py": 88,
    "test_web.py": 82,
    "test_backends.py": 74,
    "test_experiments.py": 70,
    "test_browser.py": 61,
    "test_hostile_inputs.py": 38,
    "test_line_model.py": 37,
    "test_notebook.py": 34,
    "test_report.py": 27,
    "test_serve.py": 25,
    "test_serve_line_run.py": 23,
    "test_batch.py": 23,
    "test_read.py": 22,
    "test_preprocess.py": 21,
    "test_adapt.py": 20,
    "test_train.py": 20,
}
SECONDS_PER_TEST = 0.3


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the longest files first (FILE_SECONDS, the whole suite's times); other modes,
    and a suite chosen by -m or -k (the quick suite), as xdist has them."""
    if config.getvalue("dist") != "loadfile" or config.option.markexpr or config.option.keyword:
        return None
    from xdist.scheduler import LoadFileScheduling

    def seconds(unit) -> float:
        scope, tests = unit
        return FILE_SECONDS.get(Path(scope).name, SECONDS_PER_TEST * len(tests))

    class LongestFirst(LoadFileScheduling):
        def _assign_work_unit(self, node) -> None:
            queue = sorted(self.workqueue.items(), key=seconds, reverse=True)  # stable: ties keep xdist's order
            self.workqueue.clear()
            self.workqueue.update(queue)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


@pytest.fixture(scope="session")
def mnist():
    from digitlab.data import load_dataset

    return load_dataset("mnist")


def make_synthetic_idx(directory, n_train=300, n_test=100, seed=0):
    """A learnable 28x28 ten-class set: class k is a bright 6x6 block at one of ten places, plus noise."""
    import numpy as np

    from digitlab.data import write_idx

    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n, dtype=np.uint8) % 10
        x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + (k // 5) * 14, 2 + (k % 5) * 5
            x[i, r : r + 6, c : c + 5] = 230
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte", xtr)
    write_idx(directory / "train-labels-idx1-ubyte", ytr)
    write_idx(directory / "t10k-images-idx3-ubyte", xte)
    write_idx(directory / "t10k-labels-idx1-ubyte", yte)
    return directory


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """Directory with a small synthetic IDX data set (use with dataset name 'synthetic')."""
    return built_once(tmp_path_factory, "synthetic", make_synthetic_idx)


def train_once(tmp_path_factory, name: str, model_cfg, train_cfg, data_dir):
    """A run trained into the session's shared folder, without Keras' progress bar."""
    from digitlab.training import train

    return built_once(
        tmp_path_factory, name, lambda out: train(model_cfg, train_cfg, out, data_dir=data_dir, verbose=0)
    )


@pytest.fixture(scope="session")
def synthetic_mlp_run(tmp_path_factory, synthetic_dir):
    """A tiny MLP run: 16 units, two epochs of batch 32 on the synthetic set (the defaults otherwise)."""
    from digitlab.config import ModelConfig, TrainConfig

    model_cfg = ModelConfig(architecture="mlp", units=(16,))
    train_cfg = TrainConfig(epochs=2, batch_size=32, dataset="synthetic")
    return train_once(tmp_path_factory, "mlp-synthetic", model_cfg, train_cfg, synthetic_dir)


@pytest.fixture(scope="session")
def synthetic_cnn_run(tmp_path_factory, synthetic_dir):
    """A tiny CNN run: filters 4 and 8, one epoch of batch 32 on the synthetic set (100 test images)."""
    from digitlab.config import ModelConfig, TrainConfig

    model_cfg = ModelConfig(architecture="cnn", filters=(4, 8))
    train_cfg = TrainConfig(epochs=1, batch_size=32, dataset="synthetic")
    return train_once(tmp_path_factory, "cnn-synthetic", model_cfg, train_cfg, synthetic_dir)


@pytest.fixture(scope="session")
def tiny_line_run(tmp_path_factory, synthetic_dir):
    """A tiny line model (the numbers preset with filters 4, 8, 8, 8 and a Dense of 16): two epochs of 96
    lines, 48 validation lines, made from the synthetic set, without the preset's digit model
    (`line_digit_run` has one) and without marks among its digits: a run of eleven classes, as line runs
    trained before the "not a digit" symbol are. The machinery, not accuracy."""
    from digitlab.config import resolve_configs

    model_cfg, train_cfg = resolve_configs("numbers", epochs=2, lines=96, val_lines=48, batch_size=32, outliers=0.0)
    model_cfg = dataclasses.replace(model_cfg, filters=(4, 8, 8, 8), dense=16)
    train_cfg = dataclasses.replace(train_cfg, dataset="synthetic", digit_model=None, export_onnx=False)
    return train_once(tmp_path_factory, "line-synthetic", model_cfg, train_cfg, synthetic_dir)


@pytest.fixture(scope="session")
def line_digit_run(tmp_path_factory, tiny_line_run, synthetic_cnn_run):
    """`tiny_line_run` with `synthetic_cnn_run` as its digits/ folder, as `--preset numbers` leaves a run:
    `read` combines both models. Tests that write into it work on a copy."""
    run = tmp_path_factory.mktemp("line-digit") / "run"
    shutil.copytree(tiny_line_run, run)
    shutil.copytree(synthetic_cnn_run, run / "digits")
    return run


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Where tests leave files for a person to look at (screenshots): under pytest's temporary directory,
    which keeps the last three runs (pytest-of-$USER/pytest-current/artifacts0), never in the repository."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist):
    """A run of the fast preset trained on real MNIST (tests that use it are marked slow)."""
    from digitlab import resolve_configs, train

    model_cfg, train_cfg = resolve_configs("fast")
    return built_once(tmp_path_factory, "fast", lambda out: train(model_cfg, train_cfg, out, verbose=0))


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own download does not work here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (one per test module); skipped where it is absent."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def serve_app():
    """`serve_app(app) -> url`: the FastAPI app served by uvicorn in a thread on a free port of 127.0.0.1,
    until the test module ends."""
    import socket
    import threading
    import time

    import uvicorn

    servers = []

    def start(app) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, thread in servers:
        thread.join(timeout=10)
