"""SkippedFiles: skips counted per epoch and in total, resumable, old states still load."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch.utils.data import DataLoader

from clapkit.data import ClapCollator, ClapExample, MultiTaskCollator, SkippedFiles, SkippedItem

BAD = SkippedItem(key="bad", source="data/bad.flac", reason="not an audio file")
WORSE = SkippedItem(key="worse", source="data/worse.wav", reason="cut short")


def two_epochs() -> SkippedFiles:
    tally = SkippedFiles()
    for epoch, batches in enumerate([[[BAD], [WORSE]], [[BAD], []]]):
        tally.set_epoch(epoch)
        for skipped in batches:
            tally.update(skipped)
    return tally


def test_counts_per_epoch_and_total() -> None:
    tally = two_epochs()
    assert tally.count == 3
    assert (tally.in_epoch(0), tally.in_epoch(1), tally.in_epoch(2)) == (2, 1, 0)
    assert tally.times == {"data/bad.flac": 2, "data/worse.wav": 1}
    assert tally.epochs == 2
    assert tally.summary() == [
        "3 skips over 2 epochs (epoch 0: 2, epoch 1: 1) of 2 files:",
        "`data/bad.flac`: not an audio file, skipped 2 times",
        "`data/worse.wav`: cut short, skipped 1 time",
    ]


def test_state_round_trip_goes_on_counting() -> None:
    state = json.loads(json.dumps(two_epochs().state_dict()))  # what metrics.json holds
    assert state["per_epoch"] == {"0": 2, "1": 1}
    resumed = SkippedFiles()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    resumed.update([BAD])
    assert resumed.count == 4
    assert resumed.per_epoch == {0: 2, 1: 1, 2: 1}
    assert resumed.times["data/bad.flac"] == 3
    assert resumed.epochs == 3


def test_state_of_an_old_checkpoint_still_loads() -> None:
    old = {"reasons": {"data/bad.flac": "not an audio file"}, "count": 8}
    tally = SkippedFiles()
    tally.load_state_dict(old)
    assert (tally.count, tally.times, tally.per_epoch) == (8, {}, {})
    tally.update([BAD])
    assert tally.count == 9
    assert tally.summary()[1] == "`data/bad.flac`: not an audio file, skipped 1 time"


def _in_worker(items: list[Any]) -> dict[str, Any]:
    """Both collators' waveforms, and whether they were stacked into shared memory."""
    clap = ClapCollator()(items)["waveform"]
    tasks = [{**i, "task": "t", "prompt": "p", "answer": "a"} for i in items]
    multitask = MultiTaskCollator()(tasks)["waveform"]
    return {"waveform": clap, "shared": [clap.is_shared(), multitask.is_shared()]}


def test_a_worker_stacks_the_batch_into_shared_memory() -> None:
    """Stacked in shared memory, a batch crosses to the main process without another copy."""
    items = [
        ClapExample(waveform=torch.full((5,), float(i)), caption="c", labels=(), key=str(i))
        for i in range(4)
    ]
    batches = list(DataLoader(items, batch_size=2, num_workers=1, collate_fn=_in_worker))
    assert [b["shared"] for b in batches] == [[True, True], [True, True]]
    assert torch.equal(batches[1]["waveform"], torch.tensor([[2.0] * 5, [3.0] * 5]))
    assert not ClapCollator()(items)["waveform"].is_shared()  # the main process: ordinary memory
    assert ClapCollator()([BAD])["waveform"].shape == (0, 0)
