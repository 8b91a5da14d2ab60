"""Batch buffers in shared memory that DataLoader workers fill again and again.

A DataLoader worker sends each batch to the main process through shared memory. PyTorch's
collation gives every batch fresh pages, and the kernel allocates and zeroes each one when it is
first written: about 1 ms per 7 s clip at 44.1 kHz, a third of what decoding a 5 s FLAC crop
costs (``recipes/benchmarks/bench_data.py`` prints both). With :class:`BatchBuffers` a worker
keeps a few batch buffers and stacks each batch into a free one; the main process hands the
buffer back with :func:`give_back` once the batch's waveform lives elsewhere (on the device, in
pinned memory, or in the copy ``give_back`` makes), and the worker writes into the same pages
again.

Nothing waits and nothing is overwritten while in use: a worker with no free buffer stacks into
fresh shared memory as without buffers, so a batch never given back only keeps its buffer.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import MutableMapping, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import default_collate, get_worker_info

BatchT = TypeVar("BatchT")

BUFFER_KEY = "batch_buffer"
"""The batch entry naming the buffer a worker stacked the waveforms into: ``(buffers, slot)``."""

# The main process's buffers by name, for give_back (a batch carries the name, not the object).
_LIVE: weakref.WeakValueDictionary[str, BatchBuffers] = weakref.WeakValueDictionary()


class BatchBuffers:
    """Shared-memory waveform buffers that each DataLoader worker reuses; see the module.

    Make it in the main process before the workers start and give it to the collator
    (``ClapCollator(buffers=...)``, ``MultiTaskCollator(buffers=...)``); call
    :func:`give_back` on every batch the loader yields (``clapkit.train``'s loop does).

    Args:
        slots: buffers per worker: ``prefetch_factor`` + 1 covers the batches a worker has in
            flight while the main process holds one; + 2 under accelerate, which reads one
            batch ahead (:func:`clapkit.train.loaders.batch_buffers`).
        max_workers: workers that get buffers (a worker with a higher id uses fresh memory).

    Raises:
        ValueError: ``slots`` or ``max_workers`` below 1.
    """

    def __init__(self, slots: int = 3, max_workers: int = 64) -> None:
        if slots < 1 or max_workers < 1:
            raise ValueError(f"slots and max_workers must be >= 1, got {slots}, {max_workers}")
        self.slots, self.max_workers = slots, max_workers
        self.name = uuid.uuid4().hex
        # 1 while the main process may still read the buffer; written by both sides
        self.busy = torch.zeros(slots * max_workers, dtype=torch.int32).share_memory_()
        self._storages: dict[int, torch.UntypedStorage] = {}  # this worker's buffers
        _LIVE[self.name] = self

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_storages"] = {}  # a spawned worker makes its own
        return state

    def stack(self, waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """``[b, t]`` from ``b`` equal-length waveforms, in a free buffer of this worker.

        Returns:
            The batch and its buffer's slot; ``-1`` where it was stacked as
            :func:`~torch.utils.data.default_collate` does (outside a worker, a worker beyond
            ``max_workers``, or no buffer free).
        """
        slot = self._free_slot()
        if slot is None:
            return default_collate(list(waves)), -1
        numel = len(waves) * waves[0].numel()
        nbytes = numel * waves[0].element_size()
        storage = self._storages.get(slot)
        if storage is None or storage.nbytes() < nbytes:
            storage = torch.UntypedStorage._new_shared(nbytes)
            self._storages[slot] = storage
        flat = torch.empty(0, dtype=waves[0].dtype).set_(storage)
        out = flat[:numel].view(len(waves), *waves[0].shape)
        torch.stack(list(waves), out=out)
        self.busy[slot] = 1
        return out, slot

    def _free_slot(self) -> int | None:
        """A slot of this worker that the main process gave back, or None."""
        info = get_worker_info()
        if info is None or info.id >= self.max_workers:
            return None
        first = info.id * self.slots
        return next((s for s in range(first, first + self.slots) if not self.busy[s]), None)

    def release(self, slot: int) -> None:
        """Let the worker reuse ``slot`` (the main process no longer reads it)."""
        self.busy[slot] = 0


def give_back(batch: BatchT, key: str = "waveform") -> BatchT:
    """Hand a batch's buffer back to its worker; call it on every batch a loader yields.

    Where ``batch[key]`` still lies in the worker's buffer (a CPU batch, no pinned copy), it is
    replaced by a copy first, so the batch stays valid whatever the worker writes next. A batch
    without a buffer (fresh memory, no ``BatchBuffers``, already given back, or not a dict) is
    left as it is.

    Args:
        batch: a collated batch (a dict batch is changed in place).
        key: the entry holding the worker's waveforms.

    Returns:
        ``batch``.
    """
    if not isinstance(batch, MutableMapping) or BUFFER_KEY not in batch:
        return batch
    name, slot = batch.pop(BUFFER_KEY)
    buffers = _LIVE.get(name)
    if buffers is None:  # its loader is gone, and its workers with it
        return batch
    waves = batch[key]
    if waves.device.type == "cpu" and waves.untyped_storage().is_shared():
        batch[key] = waves.clone()
    buffers.release(slot)
    return batch


def stack_into(
    batch: MutableMapping[str, Any], waves: Sequence[torch.Tensor], buffers: BatchBuffers | None
) -> None:
    """Set ``batch["waveform"]`` to the stacked ``waves`` (``[0, 0]`` from none).

    Into a buffer of ``buffers`` (the batch tagged for :func:`give_back`), or as
    :func:`~torch.utils.data.default_collate` stacks: in a worker straight into (fresh) shared
    memory, so the batch reaches the main process without another copy.
    """
    if not waves:
        batch["waveform"] = torch.zeros(0, 0)
        return
    if buffers is None:
        batch["waveform"] = default_collate(list(waves))
        return
    batch["waveform"], slot = buffers.stack(waves)
    if slot >= 0:
        batch[BUFFER_KEY] = (buffers.name, slot)
