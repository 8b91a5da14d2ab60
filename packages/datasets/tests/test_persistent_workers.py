"""Persistent DataLoader workers see ``set_epoch``: the epoch lives in shared memory."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from clapkit.audio import FrontendConfig
from clapkit.data import (
    ManifestDataset,
    MultiTaskDataset,
    MultiTaskRecord,
    ShardDataset,
    SharedEpoch,
    read_manifest,
    write_shards,
)

# 0.2 s crops at the files' 8 kHz: shorter than every clip, so every crop is a random draw
CROP = FrontendConfig(
    sample_rate=8000,
    n_fft=256,
    win_length=256,
    hop_length=80,
    fmax=4000.0,
    clip_seconds=0.2,
    fill="repeat",
)
Items = list[tuple[str, torch.Tensor]]
Make = Callable[[], "Dataset | IterableDataset"]


def items_of(loader: DataLoader) -> Items:
    """``(key, waveform)`` of every item, in the loader's order."""
    return [(item["key"], item["waveform"]) for item in loader]


def same(a: Items, b: Items) -> bool:
    return [k for k, _ in a] == [k for k, _ in b] and all(
        torch.equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True)
    )


def makers(tmp_path: Path, manifest: Path) -> dict[str, Make]:
    """The three datasets with an epoch, training mode, seed 3, over the same 12 clips."""
    records = read_manifest(manifest)
    write_shards(records, tmp_path / "shards", samples_per_shard=3)  # 4 shards, 2 per worker
    tasks = [MultiTaskRecord(r.audio, "digit", "which digit", r.labels[0], r.key) for r in records]
    return {
        "manifest": lambda: ManifestDataset(manifest, CROP, train=True, seed=3),
        "shards": lambda: ShardDataset(tmp_path / "shards", CROP, train=True, seed=3),
        "multitask": lambda: MultiTaskDataset(tasks, CROP, train=True, seed=3),
    }


def fresh(make: Make, epoch: int, workers: int = 2) -> Items:
    """An epoch from a new dataset and a new, non-persistent loader."""
    dataset = make()
    dataset.set_epoch(epoch)  # type: ignore[union-attr]
    return items_of(DataLoader(dataset, batch_size=None, num_workers=workers))


@pytest.mark.parametrize("kind", ["manifest", "shards", "multitask"])
def test_persistent_workers_draw_each_epochs_crops(
    tmp_path: Path, manifest: Path, kind: str
) -> None:
    make = makers(tmp_path, manifest)[kind]
    dataset = make()
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
    epochs, iterators = [], []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        iterators.append(iter(loader))
        epochs.append(items_of(iterators[-1]))  # type: ignore[arg-type]
    assert iterators[0] is iterators[1]  # the same worker processes served both epochs
    assert sorted(k for k, _ in epochs[0]) == sorted(k for k, _ in epochs[1])
    crops = [dict(e) for e in epochs]
    changed = [k for k in crops[0] if not torch.equal(crops[0][k], crops[1][k])]
    assert len(changed) == len(crops[0]), (
        f"epoch 1 kept epoch 0's crops of {set(crops[0]) - set(changed)}"
    )
    assert same(epochs[0], fresh(make, 0))
    assert same(epochs[1], fresh(make, 1))
    if kind != "shards":  # (two shard readers interleave their streams: another order)
        assert same(epochs[1], fresh(make, 1, workers=0))


def test_spawned_persistent_workers_share_the_epoch(manifest: Path) -> None:
    dataset = ManifestDataset(manifest, CROP, train=True, seed=3)
    loader = DataLoader(
        dataset,
        batch_size=4,
        num_workers=1,  # (a spawned worker imports torch and clapkit anew: seconds)
        persistent_workers=True,
        multiprocessing_context="spawn",  # the dataset is pickled to the workers
    )
    for epoch in (2, 5):
        dataset.set_epoch(epoch)
        batches = [batch["waveform"] for batch in loader]
        expected = fresh(lambda: ManifestDataset(manifest, CROP, train=True, seed=3), epoch, 0)
        assert torch.equal(torch.cat(batches), torch.stack([w for _, w in expected]))


def test_a_shared_epoch_pickles_as_the_same_memory_for_workers() -> None:
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers the shared-memory reductions)

    epoch = SharedEpoch(4)
    other = pickle.loads(ForkingPickler.dumps(epoch))  # as DataLoader hands it to a worker
    epoch.set(7)
    assert other.get() == 7
    assert repr(other) == "SharedEpoch(7)"
    copied = pickle.loads(pickle.dumps(epoch))  # a plain pickle is a copy, not a link
    epoch.set(9)
    assert copied.get() == 7
    with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
        epoch.set(-1)
