"""digitlab: recognise handwritten digits with neural networks, from verified MNIST to a served model.

The pipeline's stages are modules and packages named for them: config, data, models, training,
evaluation, calibrate, predict, preprocess, export, serve, report, cli (CONTRIBUTING.md has the map).
The names below are the library's front door.
"""

from importlib import import_module, metadata

from digitlab import quiet
from digitlab.config import PRESETS, ModelConfig, TrainConfig, resolve_configs
from digitlab.data import load_dataset, load_mnist
from digitlab.errors import DataError, DigitlabError, RunError

__version__ = metadata.version("digitlab")  # one place: pyproject.toml
quiet.install()  # TensorFlow's start-up lines hidden, whichever way it is first imported (DIGITLAB_VERBOSE=1 shows them)

# Keras and TensorFlow load only when one of these is first used: `import digitlab`, the ONNX runtime
# and `digitlab --help` never pay for them.
_LAZY = {
    "build_model": "digitlab.models",
    "train": "digitlab.training",
    "resume": "digitlab.training",
    "adapt": "digitlab.training.adapt",
    "evaluate": "digitlab.evaluation",
    "evaluate_ensemble": "digitlab.evaluation",
    "load_predictor": "digitlab.predict",
    "load_model": "digitlab.predict.keras_runtime",
    "read_history": "digitlab.runs",
    "read": "digitlab.predict.reading",
    "predict_image": "digitlab.predict.reading",
    "load_reader": "digitlab.predict.reading",
}

__all__ = [
    "PRESETS",
    "DataError",
    "DigitlabError",
    "ModelConfig",
    "RunError",
    "TrainConfig",
    "__version__",
    "load_dataset",
    "load_mnist",
    "resolve_configs",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'digitlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
