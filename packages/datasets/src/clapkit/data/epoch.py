"""An epoch number that persistent DataLoader workers see change.

A DataLoader with ``persistent_workers=True`` keeps its worker processes (and their copies of
the dataset) from one epoch to the next. An epoch kept as a plain attribute would then stay at
the value the workers were started with: every epoch would draw epoch 0's crops, captions and
shard order again. :class:`SharedEpoch` keeps the number in shared memory (a one-element int64
tensor, ``share_memory_()``): the workers' copies of the dataset hold the same memory, so
``set_epoch`` in the main process reaches them. It pickles as that shared memory under the
``spawn`` and ``forkserver`` start methods too (torch's multiprocessing reductions), and is
inherited as it is under ``fork``.

Set the epoch before ``iter(loader)``: persistent workers start fetching the epoch's first
batches as soon as the iterator is reset.
"""

from __future__ import annotations

import torch

__all__ = ["SharedEpoch", "SharedEpochMixin"]


class SharedEpoch:
    """An epoch number in shared memory, read and written by every process that holds it.

    Args:
        epoch: the first value.

    Raises:
        ValueError: a negative epoch.
    """

    def __init__(self, epoch: int = 0) -> None:
        self._value = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.set(epoch)

    def get(self) -> int:
        """The epoch as the last ``set`` in any process left it."""
        return int(self._value[0])

    def set(self, epoch: int) -> None:
        """Make ``epoch`` the value every holder reads.

        Args:
            epoch: the epoch (>= 0).

        Raises:
            ValueError: a negative epoch.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._value[0] = epoch

    def __repr__(self) -> str:
        return f"SharedEpoch({self.get()})"


class SharedEpochMixin:
    """``epoch`` and ``set_epoch`` of a dataset, through a :class:`SharedEpoch`.

    The dataset's ``__init__`` sets ``self.shared_epoch = SharedEpoch()`` (in the main process:
    a worker making its own would share nothing), and reads ``self.epoch`` where it draws.
    """

    shared_epoch: SharedEpoch

    @property
    def epoch(self) -> int:
        """The epoch whose draws are made (shared with the DataLoader's workers)."""
        return self.shared_epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws are made, in this process and in its DataLoader workers
        (persistent ones included); call it before ``iter(loader)``.

        Args:
            epoch: the epoch (>= 0).

        Raises:
            ValueError: a negative epoch.
        """
        self.shared_epoch.set(epoch)
