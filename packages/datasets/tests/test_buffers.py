"""BatchBuffers: workers refill their shared-memory batch buffers; give_back keeps batches whole."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from clapkit.data import (
    BUFFER_KEY,
    BatchBuffers,
    ClapCollator,
    ClapExample,
    MultiTaskCollator,
    give_back,
)

CLIPS = 24


def _items() -> list[ClapExample]:
    return [
        ClapExample(waveform=torch.full((4000,), float(i)), caption=f"c{i}", labels=(), key=str(i))
        for i in range(CLIPS)
    ]


def _expected(batch_size: int = 2) -> list[torch.Tensor]:
    values = torch.arange(CLIPS, dtype=torch.float32)
    return [v[:, None].expand(-1, 4000) for v in values.split(batch_size)]


def _loader(buffers: BatchBuffers, workers: int = 2, **options: Any) -> DataLoader:
    return DataLoader(
        _items(), batch_size=2, num_workers=workers, prefetch_factor=2,
        collate_fn=ClapCollator(buffers=buffers), **options,
    )  # fmt: skip


def test_workers_refill_their_buffers_and_given_back_batches_stay_whole() -> None:
    """Every batch comes in a worker's buffer (3 a worker cover 2 in flight and the one the main
    process holds), slots are reused, and each batch given back stays equal to its clips while
    the workers write their next batches into the same buffers."""
    buffers = BatchBuffers(slots=3)
    kept, slots = [], []
    for batch in _loader(buffers):
        slots.append(batch[BUFFER_KEY][1])
        assert batch["waveform"].is_shared()
        kept.append(give_back(batch)["waveform"])
        assert BUFFER_KEY not in batch
        assert not kept[-1].is_shared()  # a copy: the buffer is the worker's again
    assert len(slots) == CLIPS // 2
    assert set(slots) <= set(range(6))  # 2 workers x 3 slots, reused for 12 batches
    for got, want in zip(kept, _expected(), strict=True):
        assert torch.equal(got, want)
    assert int(buffers.busy.sum()) == 0


def test_batches_never_given_back_keep_their_buffers_and_the_rest_go_to_fresh_memory() -> None:
    buffers = BatchBuffers(slots=3)
    batches = list(_loader(buffers))
    tagged = [b for b in batches if BUFFER_KEY in b]
    assert len(tagged) == 6  # each worker's first 3; nothing was overwritten or waited for
    for batch, want in zip(batches, _expected(), strict=True):
        assert torch.equal(batch["waveform"], want)
    assert int(buffers.busy.sum()) == 6


def test_a_batch_already_moved_is_not_copied_and_its_slot_is_freed() -> None:
    """On a GPU run the batch is on the device (or pinned) before it is given back."""
    buffers = BatchBuffers(slots=1)
    batch = next(iter(_loader(buffers, workers=1)))
    slot = batch[BUFFER_KEY][1]
    moved = batch["waveform"].clone()  # stands for .to(device) / the pinned copy
    batch["waveform"] = moved
    assert give_back(batch)["waveform"] is moved
    assert int(buffers.busy[slot]) == 0
    assert give_back(batch) is batch  # twice: nothing more to hand back


def test_spawned_workers_get_the_buffers_too() -> None:
    buffers = BatchBuffers(slots=3)
    loader = _loader(buffers, workers=1, multiprocessing_context="spawn")
    kept = []
    for batch in loader:
        assert BUFFER_KEY in batch
        kept.append(give_back(batch)["waveform"])
    assert all(torch.equal(g, w) for g, w in zip(kept, _expected(), strict=True))


def test_in_process_batches_and_the_multitask_collator() -> None:
    buffers = BatchBuffers()
    batch = ClapCollator(buffers=buffers)(_items()[:2])
    assert BUFFER_KEY not in batch  # no worker: ordinary memory
    assert not batch["waveform"].is_shared()
    tasks = [{**i, "task": "t", "prompt": "p", "answer": "a"} for i in _items()]
    loader = DataLoader(
        tasks, batch_size=4, num_workers=1, collate_fn=MultiTaskCollator(buffers=buffers)
    )
    got = [give_back(b)["waveform"] for b in loader]
    assert all(torch.equal(g, w) for g, w in zip(got, _expected(4), strict=True))


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slots and max_workers must be >= 1, got 0, 64"):
        BatchBuffers(slots=0)
