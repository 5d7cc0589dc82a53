"""digitlab.atomic: the writer's temporaries, and their removal once the process that wrote them is gone.

Writers are real processes killed with SIGKILL, as a crash or `kill -9` leaves them.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from digitlab import atomic, runs


def start_writer(code: str) -> subprocess.Popen:
    """A Python process that runs `code` (which prints "ready" once its temporary exists) and waits."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code) + "\nimport time\ntime.sleep(600)\n"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a kill reaches any child it started
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()  # reaped: a zombie would still answer to its pid


def killed_writer(code: str) -> None:
    kill(start_writer(code))


def hidden(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_temporary_names_carry_the_writer(tmp_path):
    with atomic.replacing(tmp_path / "model.keras") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".model.keras.{os.getpid()}@")
        assert tmp.name.endswith(f"{atomic.TEMP_SUFFIX}.keras")  # Keras picks the format from the suffix
        assert runs.is_temporary(tmp)
        tmp.write_bytes(b"model")
    assert (tmp_path / "model.keras").read_bytes() == b"model"
    assert os.listdir(tmp_path) == ["model.keras"]


@pytest.mark.slow
def test_a_killed_writers_file_is_removed(tmp_path):
    target = tmp_path / "train-images-idx3-ubyte"
    killed_writer(f"""
        from digitlab import atomic
        with atomic.replacing({str(target)!r}) as tmp:
            tmp.write_bytes(b"half a file")
            print("ready", flush=True)
            import time; time.sleep(600)
    """)
    left = hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(".train-images-idx3-ubyte.")  # what kill -9 leaves
    assert atomic.remove_stale(tmp_path) == [tmp_path / left[0]]
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_killed_writers_folder_is_removed(tmp_path):
    killed_writer(f"""
        from pathlib import Path
        from digitlab import atomic
        work = atomic.temporary_dir(Path({str(tmp_path / "model.onnx")!r}))
        (work / "model.onnx").write_bytes(b"half an export")
        print("ready", flush=True)
    """)
    [left] = hidden(tmp_path)
    assert left.startswith(".model.onnx.") and left.endswith(atomic.TEMP_SUFFIX)
    atomic.remove_stale(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_live_writers_and_the_users_files_are_kept(tmp_path):
    live = start_writer(f"""
        from digitlab import atomic
        with atomic.replacing({str(tmp_path / "metrics.json")!r}) as tmp:
            tmp.write_bytes(b"{{}}")
            print("ready", flush=True)
            import time; time.sleep(600)
    """)
    try:
        users = [
            ".notes.tmp",
            ".model.keras.backup.tmp.keras",
            ".metrics.json.12345678.tmp.json",  # no writer named
            ".model.keras.1@elsewhere-host.abcdefgh.tmp.keras",  # another machine's writer
            "model.keras.tmp",
            "report.tmp",
        ]
        for name in users:
            (tmp_path / name).write_bytes(b"mine")
        own = atomic.replacing(tmp_path / "history.csv")
        mine = own.__enter__()  # this process is writing it
        before = sorted(os.listdir(tmp_path))
        assert atomic.remove_stale(tmp_path) == []
        assert sorted(os.listdir(tmp_path)) == before
        own.__exit__(RuntimeError, RuntimeError("abandoned"), None)
        assert not mine.exists()
    finally:
        kill(live)


def test_missing_or_unwritable_directories_are_left_alone(tmp_path):
    assert atomic.remove_stale(tmp_path / "absent") == []


@pytest.mark.slow
def test_only_the_named_targets_temporaries(tmp_path):
    for target in ("digitlab-npm", "other"):
        killed_writer(f"""
            from pathlib import Path
            from digitlab import atomic
            atomic.temporary_dir(Path({str(tmp_path / target)!r}))
            print("ready", flush=True)
        """)
    atomic.remove_stale(tmp_path, target="digitlab-npm")
    [left] = hidden(tmp_path)
    assert left.startswith(".other.")


# ---- where digitlab starts work: training, resuming, exporting ----


@pytest.fixture
def stale_run(tmp_path):
    """A run directory with a config, a killed writer's partial checkpoint and the user's own file."""
    from digitlab.config import ModelConfig, TrainConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs.write_json(
        run_dir / runs.CONFIG,
        {"model": ModelConfig().to_dict(), "train": TrainConfig(dataset="toy").to_dict(), "data": {}},
    )
    (run_dir / ".notes.tmp").write_text("mine")
    killed_writer(f"""
        from digitlab import atomic
        with atomic.replacing({str(run_dir / runs.CHECKPOINT)!r}) as tmp:
            tmp.write_bytes(b"half a checkpoint")
            print("ready", flush=True)
            import time; time.sleep(600)
    """)
    assert len(hidden(run_dir)) == 2
    return run_dir


@pytest.mark.slow
def test_train_removes_stale_temporaries(stale_run):
    from digitlab.config import ModelConfig, TrainConfig
    from digitlab.errors import RunError
    from digitlab.training import train

    with pytest.raises(RunError, match="already holds a run"):  # stops before training: no data needed
        train(ModelConfig(), TrainConfig(), stale_run)
    assert hidden(stale_run) == [".notes.tmp"]


@pytest.mark.slow
def test_resume_removes_stale_temporaries(stale_run):
    from digitlab.errors import RunError
    from digitlab.training import resume

    with pytest.raises(RunError, match="never finished an epoch"):
        resume(stale_run)
    assert hidden(stale_run) == [".notes.tmp"]


@pytest.mark.slow
def test_export_removes_stale_temporaries(stale_run):
    from digitlab.errors import DataError
    from digitlab.export import FORMATS, export

    (stale_run / runs.MODEL).write_bytes(b"not a model")  # never loaded: the check images fail first
    killed_writer(f"""
        from pathlib import Path
        from digitlab import atomic
        atomic.temporary_dir(Path({str(stale_run / FORMATS["tflite"])!r}))
        print("ready", flush=True)
    """)
    assert len(hidden(stale_run)) == 3
    with pytest.raises(DataError, match="no-data does not exist"):  # after the cleanup
        export(stale_run, "tflite", data_dir=stale_run / "no-data")
    assert hidden(stale_run) == [".notes.tmp"]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    from digitlab.errors import DigitlabError

    target = tmp_path / "metrics.json"
    target.write_text("old")
    monkeypatch.setattr(atomic, "install", no_space)
    with pytest.raises(DigitlabError, match=rf"^no space left on device writing {target}$"):
        atomic.write_bytes(target, b"new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError("Unable to synchronously write data (file write failed: errno = 28, No space left on device)"),
        ValueError("the writer gave up"),  # raised from an OSError(ENOSPC) below
    ],
    ids=["quota", "h5py's message", "wrapped"],
)
def test_a_writer_that_runs_out_of_space_is_the_same_error(tmp_path, failure):
    from digitlab.errors import DigitlabError

    target = tmp_path / "model.keras"
    full = pytest.raises(DigitlabError, match=rf"^no space left on device writing {target}$")
    with full, atomic.replacing(target) as tmp:
        tmp.write_bytes(b"half a mod")
        try:
            no_space()
        except OSError as e:
            raise failure from (e if isinstance(failure, ValueError) else None)
    assert os.listdir(tmp_path) == []


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(PermissionError), atomic.replacing(tmp_path / "a.json"):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert os.listdir(tmp_path) == []
