"""Self-splitting loaders (tar shards) and the contrastive helpers, without a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from clapkit.audio import FrontendConfig
from clapkit.data import BUFFER_KEY, ManifestRecord, give_back, write_manifest, write_shards
from clapkit.train.contrastive import disable_dropout
from clapkit.train.loaders import (
    SelfSplitLoader,
    build_train_data,
    prepare_train_loader,
    shard_batches_per_epoch,
    skip_batches,
)

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd" / "recordings"
# 0.2 s crops at the files' 8 kHz: shorter than every clip, so every crop is a random draw
CROP = FrontendConfig(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=80, fmax=4000.0, clip_seconds=0.2
)  # fmt: skip


def test_batches_per_epoch_of_shards() -> None:
    # 48 clips over 2 processes x 2 workers: 12 clips per reader, 3 batches of 4 each
    assert shard_batches_per_epoch(48, batch_size=4, num_workers=2, num_processes=2) == 6
    assert shard_batches_per_epoch(50, batch_size=4, num_workers=0, num_processes=1) == 12
    with pytest.raises(SystemExit, match="each of the 4 shard readers 2 clips"):
        shard_batches_per_epoch(8, batch_size=4, num_workers=2, num_processes=2)


class Counting(IterableDataset):
    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(10 * self.epoch, 10 * self.epoch + 6))


def test_self_split_loader_sets_epochs_and_skips_on_resume() -> None:
    loader = SelfSplitLoader(DataLoader(Counting(), batch_size=2), torch.device("cpu"), 3)
    loader.set_epoch(1)
    assert [b.tolist() for b in loader] == [[10, 11], [12, 13], [14, 15]]
    assert len(loader) == 3
    resumed = skip_batches(None, loader, 2)  # two batches of this epoch already trained on
    assert [b.tolist() for b in resumed] == [[14, 15]]
    assert [b.tolist() for b in loader] == [[10, 11], [12, 13], [14, 15]]  # one pass skipped
    with pytest.raises(TypeError, match="unknown"):
        len(SelfSplitLoader(DataLoader(Counting(), batch_size=2), torch.device("cpu"), None))


def no_tokens(texts: list[str]) -> dict[str, torch.Tensor]:
    return {}


@pytest.mark.parametrize("shards", [False, True], ids=["manifest", "shards"])
def test_persistent_workers_draw_every_epoch_and_a_resume_repeats_it(
    tmp_path: Path, shards: bool
) -> None:
    from accelerate import Accelerator, DataLoaderConfiguration

    # as clapkit.train.setup makes it: a manifest's order is drawn from (seed, epoch)
    config = DataLoaderConfiguration(use_seedable_sampler=True)
    accelerator = Accelerator(cpu=True, dataloader_config=config)
    records = [
        ManifestRecord(FSDD / f"{d}_{s}_0.flac", (f"digit {d}",), (str(d),), f"{d}{s}")
        for d in range(4)
        for s in ("jackson", "theo")
    ]
    manifest = write_manifest(records, tmp_path / "train.jsonl")
    write_shards(records, tmp_path / "shards", samples_per_shard=2)  # 4 shards, 2 per worker

    buffers: dict[int, Any] = {}  # each prepared loader's BatchBuffers

    def loader_of() -> tuple[Any, Any]:
        data = build_train_data(
            CROP, no_tokens, manifest=str(manifest),
            shards=[str(tmp_path / "shards")] if shards else [],
            samples_per_epoch=8 if shards else None, shuffle_buffer=2, batch_size=2,
            num_workers=2, prefetch_factor=2, seed=5,
        )  # fmt: skip
        assert data.loader.persistent_workers
        loader = prepare_train_loader(
            accelerator, data.loader, splits_itself=data.splits_itself,
            batches_per_epoch=data.batches_per_epoch,
        )  # fmt: skip
        buffers[id(loader)] = data.loader.collate_fn.buffers
        return data.dataset, loader

    def epoch(dataset: Any, loader: Any, number: int, done: int = 0) -> list[torch.Tensor]:
        dataset.set_epoch(number)  # as TrainingRecipe.epoch_batches: before iter(loader)
        loader.set_epoch(number)
        batches = skip_batches(accelerator, loader, done)
        if batches is not loader:
            batches.set_epoch(number)
        got = []
        for batch in batches:  # given back as TrainingLoop.epoch_batches does
            assert BUFFER_KEY in batch  # every batch came in a worker's reused buffer
            got.append(give_back(batch)["waveform"])
        # every buffer is the workers' again, those of the batches a resume passed over too
        assert int(buffers[id(loader)].busy.sum()) == 0
        return got

    dataset, loader = loader_of()
    first, second = epoch(dataset, loader, 0), epoch(dataset, loader, 1)
    assert len(first) == len(second) == 4
    assert not any(torch.equal(a, b) for a in first for b in second)  # new crops (and order)
    resumed = epoch(*loader_of(), 1, done=2)  # a fresh run resumed after 2 batches of epoch 1
    assert len(resumed) == 2
    assert all(torch.equal(a, b) for a, b in zip(resumed, second[2:], strict=True))
    again = epoch(dataset, loader, 1, done=1)  # the persistent loader itself, resumed
    assert all(torch.equal(a, b) for a, b in zip(again, second[1:], strict=True))


def test_loader_options_keep_workers_unless_the_dataset_changes_between_epochs() -> None:
    from clapkit.train.loaders import loader_options

    pinned = torch.cuda.is_available()
    assert loader_options(0) == {"num_workers": 0, "pin_memory": pinned}
    assert loader_options(2, 3) == {
        "num_workers": 2, "pin_memory": pinned, "persistent_workers": True, "prefetch_factor": 3,
    }  # fmt: skip
    assert loader_options(2, persistent=False)["persistent_workers"] is False
    DataLoader(range(4), **loader_options(1, 2))  # torch accepts them


class Functional(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.embed_dropout = 0.3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.dropout(self.linear(x), self.embed_dropout, self.training)
        return self.drop(hidden)


def test_disable_dropout_makes_training_forwards_repeat() -> None:
    model = Functional().train()
    x = torch.randn(4, 8)
    assert not torch.equal(model(x), model(x))
    assert disable_dropout(model) == ["embed_dropout", "drop.p"]
    assert torch.equal(model(x), model(x))
