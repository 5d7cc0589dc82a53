"""The one training path's parts that are not a whole training: the schedule runs save, the epoch
pipeline both kinds of model train from, and the task chosen from the run's kind."""

import math

import numpy as np
import pytest

from digitlab.config import PRESETS, ModelConfig, TrainConfig


def one_cycle_by_hand(step: float, peak: float, total: int, warmup: float) -> float:
    """Linear warm-up from peak/25 to peak over warmup * total steps, then cosine decay to peak/1e4."""
    warm = max(1.0, warmup * total)
    start, end = peak / 25.0, peak / 1e4
    if step < warm:
        return start + (peak - start) * step / warm
    progress = min(max((step - warm) / max(1.0, total - warm), 0.0), 1.0)
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_one_cycle_is_keras_cosine_decay_with_the_saved_arguments():
    import keras

    from digitlab.training import OneCycle

    schedule = OneCycle(3e-2, 376, 0.2)
    for step in (0, 1, 37, 75, 76, 200, 375, 376, 500):
        got = float(keras.ops.convert_to_numpy(schedule(step)))
        assert got == pytest.approx(one_cycle_by_hand(step, 3e-2, 376, 0.2), rel=1e-5)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    # What a checkpoint holds, and what an older run's checkpoint holds: the same name and arguments.
    config = keras.saving.serialize_keras_object(schedule)
    assert config["config"] == {"peak": 3e-2, "total_steps": 376, "warmup": 0.2}
    again = keras.saving.deserialize_keras_object(config)
    assert float(keras.ops.convert_to_numpy(again(100))) == pytest.approx(one_cycle_by_hand(100, 3e-2, 376, 0.2))


def test_epoch_batches_make_each_epoch_once_in_order_and_stop_after_the_last():
    from digitlab.training.epochs import EpochBatches

    class Counting(EpochBatches):
        def __init__(self, **kwargs):
            super().__init__(10, 4, name="test", **kwargs)
            self.drawn = []

        def draw(self, epoch):
            self.drawn.append(epoch)
            return np.full((10, 2), epoch), np.arange(10)

    batches = Counting(first_epoch=2, epochs=4)
    assert len(batches) == 3 and len(batches[2][0]) == 2
    for epoch in (2, 3):
        assert (np.concatenate([batches[i][0] for i in range(len(batches))]) == epoch).all()
        assert (batches.last[0] == epoch).all()
        batches.on_epoch_end()
    assert batches.drawn == [2, 3] and batches.executor is None  # nothing made for an epoch not trained


def test_the_task_is_chosen_from_the_kind(synthetic_dir):
    import dataclasses

    from digitlab.training.tasks import CTCLoss, DigitTask, LineTask, SmoothedCrossentropy, task_for

    digit = task_for(ModelConfig(architecture="mlp"), TrainConfig(dataset="synthetic"), synthetic_dir)
    assert isinstance(digit, DigitTask) and digit.sizes() == {"train": 240, "validation": 60}
    assert isinstance(DigitTask.loss(TrainConfig(label_smoothing=0.1)), SmoothedCrossentropy)
    line_cfg = dataclasses.replace(PRESETS["numbers"][1], dataset="synthetic", lines=64, val_lines=8)
    line = task_for(PRESETS["numbers"][0], line_cfg, synthetic_dir)
    assert isinstance(line, LineTask) and isinstance(LineTask.loss(line_cfg), CTCLoss)
    assert line.sizes() == {
        "train": 240,
        "validation": 8,
        "lines_per_epoch": 64,
        "frames": 64,
        "lines_with_a_mark": line_cfg.outliers,  # the numbers preset's lines learn marks that are not digits
    }
    assert line_cfg.outliers > 0
    assert line.val[0].shape == (8, 32, 256)
