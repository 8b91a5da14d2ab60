"""Self-splitting loaders (tar shards) and the contrastive helpers, without a training run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from clapkit.train.contrastive import disable_dropout
from clapkit.train.loaders import SelfSplitLoader, shard_batches_per_epoch, skip_batches


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
