"""The training step of pretrain_clap reads nothing back from the device between log steps.

A GPU runs what the host queued; every read of a tensor's value (``item``, ``tolist``, ``cpu``,
``bool(tensor)``...) makes the host wait for the device, so the queue runs dry. The test runs the
recipe's own updates in its process (the smoke preset's tiny model on the CPU, where the same
calls would be reads), counts every such call between two log steps, and expects none; the log
step itself reads once. One read is not counted: torch's non-fused Adam reads its step counter,
a host tensor, which the recipes use on the CPU only (on CUDA they take the fused Adam, whose
counter lives on the device and is never read: ``TrainingRecipe.optimizer_options``).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from clapkit.train.config import parse_config
from clapkit.train.steps import update_groups

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
import pretrain_clap  # noqa: E402

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


@contextlib.contextmanager
def counting_reads() -> Iterator[list[str]]:
    """Every call of a value-reading Tensor method while inside, with where it came from."""
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(name: str) -> Any:
        original = originals[name]

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            frame = traceback.extract_stack(limit=4)[-2]
            if frame.name != "_get_value" or not frame.filename.endswith("optim/optimizer.py"):
                calls.append(f"Tensor.{name} at {frame.filename}:{frame.lineno}")
            return original(self, *args, **kwargs)

        return read

    try:
        for name in READS:
            setattr(torch.Tensor, name, counted(name))
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


class Bar:
    def update(self, n: int) -> None: ...

    def set_postfix(self, **shown: Any) -> None: ...


@pytest.mark.parametrize("negatives", ["--accumulate-negatives", "--no-accumulate-negatives"])
def test_no_host_reads_between_log_steps(tmp_path: Path, negatives: str) -> None:
    args = [
        "--preset", "smoke", "--output-dir", str(tmp_path / "run"), "--log-with", "none",
        "--log-every", "1000", "--save-every-steps", "1000", "--batch-size", "4",
        "--global-batch-size", "8", negatives, "--torch-threads", "1",
    ]  # fmt: skip
    preset, cfg = parse_config(pretrain_clap.Config, pretrain_clap.PRESETS, args, default="smoke")
    recipe = pretrain_clap.PretrainClapRecipe(cfg, preset)
    recipe.start()
    recipe.setup()
    assert recipe.micro_steps == 2
    assert recipe.full_negatives == (negatives == "--accumulate-negatives")
    loader = recipe.epoch_batches(recipe.train_data, recipe.train_loader)
    batches = list(itertools.islice(loader, 8))  # loading and collating are not the step
    recipe.model.train()
    with counting_reads() as calls:
        for group in update_groups(batches, recipe.micro_steps):
            loss = recipe.contrastive_update(group)
            recipe.step_done(Bar(), loss, epoch=0)
    assert recipe.progress.step == 4
    assert calls == []
    with counting_reads() as calls:
        window = recipe.read_losses()  # what a log step does
    assert window is not None
    assert len(window.losses) == 4
    assert len(calls) == 1
    assert calls[0].startswith("Tensor.tolist")
    recipe.cleanup()
