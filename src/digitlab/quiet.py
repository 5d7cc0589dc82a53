"""TensorFlow's start-up lines (absl, oneDNN, cpu_feature_guard) hidden unless asked for: the one place.

`digitlab/__init__.py` calls `install()` as the package is imported, so every way in (the CLI, the Python
API, a server process, a Ray worker) imports TensorFlow quietly. Two things are needed: TF_CPP_MIN_LOG_LEVEL
for what TensorFlow logs once absl is set up, and the import itself with file descriptor 2 pointed at
/dev/null, for the lines its C++ side writes before that (TensorFlow 2.21 prints "oneDNN custom operations
are on" and absl's "before absl::InitializeLog()" warning whatever TF_CPP_MIN_LOG_LEVEL says). A value of
TF_CPP_MIN_LOG_LEVEL the user set is kept; DIGITLAB_VERBOSE=1 (or the CLI's --verbose) shows everything.

The same hook imports Keras without the libraries it loads only to offer what digitlab never asks of it
(WITHOUT): scikit-learn for its scikit-learn wrappers, pandas for DataFrame inputs, JAX (where installed
beside TensorFlow) for an Orbax checkpoint patch and TensorFlow Lite's conversion of JAX functions, and
IPython for a notebook display of Keras' file editor: together about 2 s of Keras' 5 s import. A library
already imported (IPython in a notebook) is never hidden, nor the library of the backend Keras chose (JAX
under KERAS_BACKEND=jax). Imported later, by digitlab or the user, they load as usual; only
`keras.wrappers` then says scikit-learn is missing.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator

VERBOSE_ENV = "DIGITLAB_VERBOSE"  # set to 1: TensorFlow's own start-up lines show
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "2"  # TensorFlow's C++ logs: errors only
MODULES = {"tensorflow"}  # top-level modules imported with stderr silenced
WITHOUT = {"keras": ("sklearn", "pandas", "jax", "IPython")}  # imported as if these were not installed

_set_by_us = False  # whether install() set TF_CPP_MIN_LOG_LEVEL (so that verbose() may take it back)


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block: C++ code writes there, past sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


KERAS_BACKENDS = ("tensorflow", "jax", "torch")  # libraries that may be the backend Keras chooses
_hiding: set[str] = set()  # what `import` refuses at present (see hidden)


@contextlib.contextmanager
def hidden(names: tuple[str, ...]) -> Iterator[None]:
    """Within the block, `import NAME` raises ImportError for each of `names` not imported yet, except the
    library of Keras' backend: a backend's library is refused only once Keras has chosen another."""
    hide = {name for name in names if name not in sys.modules} - _hiding
    _hiding.update(hide)
    try:
        yield
    finally:
        _hiding.difference_update(hide)


def _refused(name: str) -> bool:
    if name not in _hiding:
        return False
    if name not in KERAS_BACKENDS:
        return True
    config = sys.modules.get("keras.src.backend.config")  # Keras' choice, once it has made it
    chosen = getattr(config, "backend", None)
    return callable(chosen) and chosen() != name


class _QuietLoader(importlib.abc.Loader):
    """The real loader of a module in MODULES (run with stderr silenced) or WITHOUT (run with its optional
    imports hidden); the module keeps its own loader."""

    def __init__(self, loader: importlib.abc.Loader, silence: bool, without: tuple[str, ...]):
        self.loader, self.silence, self.without = loader, silence, without

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        with silenced_stderr() if self.silence else contextlib.nullcontext(), hidden(self.without):
            self.loader.exec_module(module)
        absl = sys.modules.get("absl.logging")
        if absl is not None:  # TensorFlow's Python side warns through absl (saving a SavedModel): errors only
            absl.set_verbosity(absl.ERROR)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Refuses what `hidden` hides; finds nothing itself: hands a module of MODULES (unless verbose) or
    WITHOUT, found by the other finders, to _QuietLoader."""

    def find_spec(self, name, path, target=None):
        if _refused(name):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while Keras imports)", name=name)
        silence = name in MODULES and not _verbose()
        if not silence and name not in WITHOUT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, silence, WITHOUT.get(name, ()))
                return spec
        return None


_FINDER = _QuietFinder()


def _verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def install() -> None:
    """Quiet from now on (unless DIGITLAB_VERBOSE is set): TensorFlow's log level, unless the user chose
    one, and its import with stderr silenced; Keras' import without WITHOUT's libraries. Idempotent."""
    global _set_by_us
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    if _verbose():
        return
    if LOG_LEVEL_ENV not in os.environ:
        os.environ[LOG_LEVEL_ENV] = QUIET_LOG_LEVEL
        _set_by_us = True


def verbose() -> None:
    """Show TensorFlow's start-up lines (the CLI's --verbose), in this process and those it starts: the
    log level install() set is taken back, and TensorFlow is imported with stderr as it is."""
    global _set_by_us
    os.environ[VERBOSE_ENV] = "1"
    if _set_by_us:
        os.environ.pop(LOG_LEVEL_ENV, None)
        _set_by_us = False
