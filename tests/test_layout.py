"""The package's shape: no import cycles, a public API of functions, help without TensorFlow, a README
whose Python runs as printed."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import digitlab

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "digitlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imported_modules(path: Path) -> list[tuple[str, int, bool]]:
    """(digitlab module, line, at module level?) for every import statement in a file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name in MODULES and name != "digitlab":
                found.append((name, node.lineno, id(node) in top))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the digitlab modules it imports, each with the packages above it (Python imports those too)."""
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for target, _, _ in imported_modules(path):
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        edges.discard(name)
        edges -= {p for p in edges if name.startswith(p + ".")}  # a module's own packages are already importing
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_counting_imports_inside_functions():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_digitlab_imports_stand_at_the_top_except_in_the_cli():
    # The CLI imports each command's stage when the command runs, so that --help loads no TensorFlow.
    late = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for mod, path in MODULES.items()
        if mod != "digitlab.cli"
        for name, line, at_top in imported_modules(path)
        if not at_top
    ]
    assert late == []


def test_public_api_gives_functions_not_modules():
    for name in digitlab.__all__:
        value = getattr(digitlab, name)
        assert not isinstance(value, type(digitlab)), f"digitlab.{name} is a module"
        assert f"digitlab.{name}" not in MODULES, f"digitlab.{name} shares its name with a submodule"
    assert callable(digitlab.train) and callable(digitlab.evaluate) and callable(digitlab.build_model)


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout


@pytest.mark.slow
def test_help_and_import_load_no_tensorflow():
    out = run_python(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import digitlab\n"
        "from digitlab.cli import app\n"
        "for args in (['--help'], ['train', '--help'], ['lr-find', '--help'], ['--version']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch', 'sklearn', 'matplotlib') if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


@pytest.mark.slow
def test_version_comes_from_the_package_metadata():
    out = run_python(
        "from typer.testing import CliRunner; from digitlab.cli import app; "
        "print(CliRunner().invoke(app, ['--version']).output)"
    )
    assert out.strip() == f"digitlab {digitlab.__version__}"
    assert re.search(rf'^version = "{re.escape(digitlab.__version__)}"', (ROOT / "pyproject.toml").read_text(), re.M)


def readme_python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def test_readme_is_a_guide_of_at_most_300_lines():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert not re.search(r"\bsessions? \d|this session|last session|this round", text, re.I)


@pytest.mark.slow
def test_readme_python_blocks_run_as_printed(tmp_path, monkeypatch, mnist):
    blocks = readme_python_blocks()
    assert blocks
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["metrics"]["validation"]["accuracy"] > 0.95
    assert namespace["test"]["accuracy"] > 0.95
    assert (tmp_path / "runs" / "notebook" / "model.keras").is_file()
    answer, number = namespace["answer"], namespace["number"]
    assert answer.digit == 7 and not answer.unsure and answer.confidence > 0.9
    assert number.text == "21" and len(number.digits) == 2
    # The fields of `digitlab predict --json` and `digitlab read --json`, as the CLI reads the same images.
    from digitlab.predict import load_predictor
    from digitlab.predict.reading import predict_files, read_files

    Image.fromarray(np.hstack([255 - namespace["x_test"][1], 255 - namespace["x_test"][2]])).save("number.png")
    predictor = load_predictor(tmp_path / "runs" / "notebook")
    assert predict_files(predictor, [Path("digit.png")]) == [{"file": "digit.png", **answer.to_dict()}]
    assert read_files(predictor, [Path("number.png")]) == [{"file": "number.png", **number.to_dict()}]
    assert namespace["model"].count_params() == namespace["metrics"]["parameters"]
    assert [row["epoch"] for row in namespace["history"]] == [1, 2, 3]


def test_contributing_names_every_module():
    # The module map: a top-level module by its file name, a package by its folder, and each module of
    # a package by its file name in the package's row.
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text[text.index("## The module map") :]
    section = section[: section.index("\n## ", 3)]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")}
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if len(rel.parts) == 1:
            if f"`{rel}`" not in section:
                missing.append(str(rel))
            continue
        package = f"`{rel.parts[0]}/`"
        row = next((line for key, line in rows.items() if package in key), "")
        if not row or (
            rel.name != "__init__.py" and rel.name not in row and str(rel.relative_to(rel.parts[0])) not in row
        ):
            missing.append(str(rel))
    assert not missing, f"CONTRIBUTING.md's module map does not name {missing}"


def test_the_run_directory_docstring_names_every_run_file():
    from digitlab import runs

    for name in (*runs.RUN_FILES, *runs.EXPORTS, runs.LOCK):
        assert f"  {name}" in runs.__doc__, f"runs.py's docstring does not name {name}"
