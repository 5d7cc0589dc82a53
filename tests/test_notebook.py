"""notebooks/tutorial.ipynb runs top to bottom, in quick mode, so that it can never go stale."""

import re
from pathlib import Path

import nbclient
import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tutorial.ipynb"
QUICK = re.compile(r"^QUICK = (True|False)\b", re.M)


def outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_the_notebook_is_stored_without_outputs_and_sets_quick_first():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert QUICK.search(code[0].source), "the first code cell sets QUICK"
    assert outputs(nb) == [] and all(cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_in_quick_mode(tmp_path, monkeypatch, mnist):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    first.source = QUICK.sub("QUICK = True", first.source)
    # The kernel is this Python (whatever kernels Jupyter has installed) and works in `work`: the
    # notebook's runs and figures land there, never in the repository.
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "digitlab-test")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "work"
    work.mkdir()
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="digitlab-test", resources={"metadata": {"path": str(work)}}
    ).execute()
    run = work / "runs" / "tutorial" / "07-cnn-fast"
    for name in ("model.keras", "confusion_matrix.png", "mistakes.png", "model.onnx"):
        assert (run / name).is_file(), name
    text = "".join(out.get("text", "") for out in outputs(nb))
    assert re.search(r"test accuracy \d+\.\d\d%", text)
    assert re.search(r"model\.onnx: [\d,]+ bytes, passed True", text)
    assert sum("image/png" in out.get("data", {}) for out in outputs(nb)) >= 12  # the figures, inline
