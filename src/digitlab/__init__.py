"""digitlab: recognise handwritten digits with neural networks, from verified MNIST to a served model."""

__version__ = "0.1.0"

from digitlab.errors import DataError, DigitlabError, RunError  # noqa: E402

__all__ = [
    "DataError",
    "DigitlabError",
    "RunError",
    "build_model",
    "evaluate",
    "load_dataset",
    "load_mnist",
    "train",
]


def __getattr__(name):
    # Lazy imports: `import digitlab` must not pull in TensorFlow (the ONNX runtime path avoids it).
    if name in ("load_mnist", "load_dataset"):
        from digitlab import data

        return getattr(data, name)
    if name == "build_model":
        from digitlab.models import build_model

        return build_model
    if name == "train":
        from digitlab.train import train

        return train
    if name == "evaluate":
        from digitlab.evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'digitlab' has no attribute {name!r}")
