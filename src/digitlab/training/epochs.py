"""The epoch pipeline every kind of model trains from: a whole epoch of examples made at a time, the next
one in a background thread while the current one trains.

Making an epoch batch by batch inside the input pipeline doubled the epoch time on a 2-core CPU, and
making each epoch up front left one core idle while it was made (NumPy, SciPy and Pillow release the GIL).
What an epoch holds is the subclass's `draw(epoch)`: warped digits (training.augment) or generated lines
(training.tasks).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np


class EpochBatches(keras.utils.PyDataset):
    """Batches of `size` examples an epoch from `draw(epoch)`, epochs `first_epoch` to `epochs - 1`
    (`epochs` None: no end). `draw` is called once per epoch, in epoch order, in line or in the background.
    `last` holds the arrays of the epoch in progress or just ended (for scores on training examples)."""

    def __init__(self, size: int, batch_size: int, *, first_epoch: int = 0, epochs: int | None = None, name: str):
        super().__init__()
        self.size, self.batch_size = size, batch_size
        self.next_epoch = first_epoch
        self.last_epoch = math.inf if epochs is None else epochs - 1  # None: as many as are asked for
        self.current = self.upcoming = self.last = None
        self.name = name
        self.executor = None

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """One epoch's (x, y), in the order they are trained on."""
        raise NotImplementedError

    def _start_epoch(self) -> None:
        epoch = self.next_epoch
        self.current = self.upcoming.result() if self.upcoming is not None else self.draw(epoch)
        self.last = self.current
        self.next_epoch += 1
        self.upcoming = None
        if self.next_epoch <= self.last_epoch:  # nothing is made for an epoch nobody trains
            if self.executor is None:
                self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"digitlab-{self.name}")
            self.upcoming = self.executor.submit(self.draw, self.next_epoch)

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.current is None:
            self._start_epoch()
        batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.current[0][batch], self.current[1][batch]

    def on_epoch_end(self) -> None:
        self.current = None
        if self.upcoming is None and self.executor is not None:  # the last epoch: nothing more to make
            self.executor.shutdown(wait=False)
            self.executor = None
