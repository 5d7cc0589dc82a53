"""The Keras runtime: a run's model.keras as a forward callable.

Keras is imported inside the functions: it imports TensorFlow, which an ONNX-only deployment lacks.
Models are loaded without their training configuration (compile=False), so prediction needs none of
training's custom objects; Keras's safe mode stays on (no Lambda layers, no pickled code).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from digitlab import runs
from digitlab.errors import DigitlabError, RunError


def load_keras_model(model_path: Path, *, compile: bool = False):
    """A Keras model file, or a RunError naming it. compile=True also restores the loss and optimizer
    (their custom classes must be registered: import digitlab.training first)."""
    if importlib.util.find_spec("keras") is None:
        raise RunError(
            f"{model_path}: loading a Keras model needs the train extra: pip install 'digitlab[train]'"
            " (or use --runtime onnx)"
        )
    import keras  # TensorFlow: heavy, and absent from ONNX-only deployments

    try:
        return keras.saving.load_model(model_path, compile=compile)
    except Exception as e:  # a corrupt zip, a missing layer class...
        raise RunError(f"{model_path}: cannot be loaded as a Keras model ({type(e).__name__}: {e})") from None


def load_model(run_dir: Path):
    """A run's trained `keras.Model` (model.keras: the best validation epoch, float32), to go on with in
    Keras; its training history per epoch is `digitlab.runs.read_history(run_dir)`."""
    return load_keras_model(runs.require_model(run_dir))


def forward(model) -> Callable[[np.ndarray], np.ndarray]:
    """float32 images -> probabilities. Under TensorFlow the forward pass is traced once into a graph:
    about 1 ms a call for a small batch instead of about 7 ms for an eager Keras call on a 2-core CPU.
    The traced graph is called as its one concrete function, which skips tf.function's matching of the
    arguments to its traces: about 0.5 ms less a call."""
    import keras  # see load_keras_model

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the backend itself: already imported by Keras

        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        traced = tf.function(lambda x: model(x, training=False), input_signature=[spec]).get_concrete_function()
        return lambda x: traced(tf.convert_to_tensor(x, tf.float32)).numpy()
    return lambda x: keras.ops.convert_to_numpy(model(x, training=False))


def set_threads(threads: int) -> int | None:
    """Run each of this process's TensorFlow ops on at most `threads` threads, and one op at a time: server
    processes sharing the CPUs (`digitlab serve --workers`) each take their share, where TensorFlow's
    default, a thread per core in every process, has them contend. Only before TensorFlow has run
    anything: a RunError after. Returns the setting as TensorFlow reports it (None: another backend)."""
    if importlib.util.find_spec("keras") is None:  # `load` says what is missing
        return None
    import keras  # see load_keras_model

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf  # the backend itself: already imported by Keras

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as e:  # "... cannot be modified after initialization"
        raise RunError(f"threads: TensorFlow has already started in this process ({e})") from None
    return tf.config.threading.get_intra_op_parallelism_threads()


def load(run_dir: Path) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[int, ...]]:
    """The forward callable and input shape (without the batch) of a run's model.keras."""
    if importlib.util.find_spec("keras") is None:  # an ONNX-only deployment
        raise DigitlabError(
            "--runtime keras needs Keras and TensorFlow (pip install 'digitlab[train]'); "
            "an ONNX-only install runs model.onnx with --runtime onnx"
        )
    model = load_keras_model(runs.require_model(run_dir))
    return forward(model), tuple(model.input_shape[1:])
