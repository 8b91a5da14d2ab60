"""TrainingRecipe: a recipe written on it trains, records, checkpoints and resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from clapkit.core.testing import RecordingHubApi
from clapkit.data import BatchBuffers, ClapCollator, ClapExample, SkippedItem
from clapkit.train.checkpointing import find_checkpoint
from clapkit.train.config import RUN_RESUMABLE_CHANGES, RunSettings
from clapkit.train.recipe import TrainingDivergedError, TrainingRecipe
from clapkit.train.steps import update_groups


@dataclasses.dataclass(frozen=True)
class ToyConfig(RunSettings):
    """The run's settings (RunSettings) plus the toy's own."""

    output_dir: str = "runs/toy"
    save_every_steps: int = 2
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_with: Literal["tensorboard", "wandb", "none"] = "none"
    epochs: int = 3
    lr: float = 0.05
    global_batch_size: int = 8
    batch_size: int = 4
    max_grad_norm: float | None = 1.0
    stop_at_step: int | None = None
    """Raise after this optimizer step (a crash in the middle of an epoch)."""
    nan_at_step: int | None = None
    """The loss of this optimizer step's micro-batches is NaN (a diverged run)."""


class SimulatedCrashError(RuntimeError):
    """The toy run's simulated crash."""


class NoisyLine(Dataset):
    """y = 3 x - 1 with noise drawn per epoch; every 5th item is a 'bad file' (skipped)."""

    def __init__(self, n: int = 40) -> None:
        self.x = torch.linspace(-1, 1, n).unsqueeze(1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        noise = torch.randn(1, generator=torch.Generator().manual_seed(1000 * self.epoch + i))
        return {"x": self.x[i], "y": 3 * self.x[i] - 1 + 0.1 * noise, "bad": i % 5 == 4,
                "name": f"clip{i}.wav"}  # fmt: skip


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if not it["bad"]]
    return {
        "x": torch.stack([it["x"] for it in good]) if good else torch.zeros(0, 1),
        "y": torch.stack([it["y"] for it in good]) if good else torch.zeros(0, 1),
        "labels": [1] * len(good),
        "skipped": [SkippedItem(it["name"], it["name"], "not audio") for it in items if it["bad"]],
    }


class ToyRecipe(TrainingRecipe[ToyConfig]):
    """A whole recipe in ~30 lines: what a new recipe writes on top of TrainingRecipe."""

    name, script = "toy", "recipes/toy.py"
    resumable_changes = (*RUN_RESUMABLE_CHANGES, "stop_at_step", "nan_at_step")
    config_class, presets, default_preset = ToyConfig, {"toy": ToyConfig()}, "toy"

    def setup(self) -> None:
        accelerator = self.accelerator
        self.data = NoisyLine()
        order = torch.Generator().manual_seed(0)
        loader = DataLoader(self.data, batch_size=self.cfg.batch_size, shuffle=True,
                            collate_fn=collate, generator=order)  # fmt: skip
        model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Dropout(0.2),
                                    torch.nn.Linear(8, 1))  # fmt: skip
        optimizer = torch.optim.Adam(model.parameters(), lr=self.cfg.lr)
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        self.resume()
        self.write_config(toy=True)

    def train(self) -> list[dict[str, Any]]:
        bar = self.progress_bar(self.cfg.epochs)
        while self.progress.epoch < self.cfg.epochs:
            self.model.train()
            batches = self.epoch_batches(self.data, self.loader, needs="labels")
            for group in update_groups(batches, self.micro_steps):
                loss = self.update(group, self.loss)
                self.step_done(bar, loss, epoch=self.progress.epoch)
                if self.progress.step == self.cfg.stop_at_step:
                    raise SimulatedCrashError
            self.close_epoch(self.epoch_record(**self.evaluate()))
        return self.progress.history

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(self.model(batch["x"]), batch["y"])
        if self.progress.step + 1 == self.cfg.nan_at_step:
            loss = loss * float("nan")
        return loss

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            x = torch.linspace(-1, 1, 9).unsqueeze(1)
            return {"test_mse": float(((self.model(x) - (3 * x - 1)) ** 2).mean())}


def run(out: Path, *args: str) -> list[dict[str, Any]]:
    return ToyRecipe.main(["--output-dir", str(out), *args])


def test_a_recipe_on_the_base_trains_records_and_checkpoints(tmp_path: Path) -> None:
    history = run(tmp_path / "run")
    assert [e["epoch"] for e in history] == [0, 1, 2]
    # 40 items in batches of 4, two micro-batches an update: 5 updates an epoch
    assert [e["step"] for e in history] == [5, 10, 15]
    assert history[-1]["test_mse"] < history[0]["test_mse"]
    # every 5th item is bad: 8 skipped per epoch, named and counted per epoch and in total
    assert [(e["skipped_files"], e["skipped_files_total"]) for e in history] == [
        (8, 8), (8, 16), (8, 24),
    ]  # fmt: skip
    assert all(len(e["step_losses"]) == 5 for e in history)
    assert history[0]["train_loss"] == pytest.approx(sum(history[0]["step_losses"]) / 5)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["preset"], config["toy"], config["num_processes"]) == ("toy", True, 1)
    assert config["gradient_accumulation_steps"] == 2
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == [
        "step_00000002", "step_00000004", "step_00000005_end", "step_00000006",
        "step_00000008", "step_00000010", "step_00000010_end", "step_00000012",
        "step_00000014", "step_00000015_end",
    ]  # fmt: skip
    for name in ("run.json", "config.json", "COMPLETE"):
        assert (tmp_path / "run" / "checkpoints" / "step_00000005_end" / name).is_file()


def test_a_crashed_run_resumes_to_the_weights_of_an_unbroken_one(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    expected = run(whole)
    # crash after step 7 (epoch 1, between the checkpoints of steps 6 and 8; dropout and the
    # shuffled order depend on the RNG states and the sampler the checkpoint restores)
    with pytest.raises(SimulatedCrashError):
        run(parts, "--stop-at-step", "7")
    assert find_checkpoint(parts / "checkpoints").name == "step_00000006"
    kept = (
        parts / "checkpoints" / "step_00000006" / "COMPLETE"
    ).read_text()  # holds the save's time
    resumed = run(parts, "--resume", "latest")
    # it went on from step 6: a run started over would have saved step 6 again
    assert (parts / "checkpoints" / "step_00000006" / "COMPLETE").read_text() == kept
    final = "checkpoints/step_00000015_end/model.safetensors"
    a, b = load_file(whole / final), load_file(parts / final)
    for name, tensor in a.items():
        assert b[name].equal(tensor), name
    drop = ("step_losses",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed] == [
        {k: v for k, v in e.items() if k not in drop} for e in expected
    ]
    # the resumed epoch keeps the update losses of before the crash
    assert resumed[1]["step_losses"] == expected[1]["step_losses"]


def test_epoch_batches_count_and_filter(tmp_path: Path) -> None:
    recipe = ToyRecipe(ToyConfig(output_dir=str(tmp_path / "run")), "toy")
    recipe.start()
    recipe.setup()
    yielded = list(recipe.epoch_batches(recipe.data, recipe.loader, needs="labels"))
    assert recipe.progress.batches_in_epoch == 10  # every batch counted, yielded or not
    assert sum(len(b["labels"]) for b in yielded) == 32
    assert recipe.skipped.in_epoch(0) == 8
    recipe.cleanup()


class Clips(Dataset):
    """12 clips of one value each; the epoch changes nothing."""

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> ClapExample:
        return ClapExample(waveform=torch.full((64,), float(i)), caption="c", labels=("l",),
                           key=str(i))  # fmt: skip


def test_epoch_batches_give_every_batch_back_to_its_workers_buffer(tmp_path: Path) -> None:
    recipe = ToyRecipe(ToyConfig(output_dir=str(tmp_path / "run")), "toy")
    recipe.start()
    buffers = BatchBuffers(slots=4)  # 2 in flight, the loop's and accelerate's read-ahead
    loader = recipe.accelerator.prepare(
        DataLoader(Clips(), batch_size=3, num_workers=1, collate_fn=ClapCollator(buffers=buffers))
    )
    waves = [b["waveform"] for b in recipe.epoch_batches(Clips(), loader, needs="labels")]
    assert [w[:, 0].tolist() for w in waves] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert not any(w.is_shared() for w in waves)  # copies: the buffers went back
    assert int(buffers.busy.sum()) == 0
    recipe.cleanup()


def test_a_nan_loss_stops_the_run_before_it_saves_anything(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(out, "--nan-at-step", "7")
    message = str(stop.value.code)
    # the losses are read at the checkpoint of step 8: the window is steps 7-8
    assert message.startswith(
        "toy: between steps 7 and 8 (epoch 1) the training loss became NaN or infinite (first "
        "here at step 7) on 1 of 1 process(es)"
    )
    assert f"{out / 'checkpoints' / 'step_00000006'} holds the weights of step 6" in message
    assert "--resume latest" in message
    assert isinstance(stop.value.__cause__, TrainingDivergedError)
    # nothing of step 7 or later is saved; what is saved is finite
    assert find_checkpoint(out / "checkpoints").name == "step_00000006"
    for name, tensor in load_file(out / "checkpoints/step_00000006/model.safetensors").items():
        assert tensor.isfinite().all(), name
    # the run goes on from there (its config differs in nan_at_step only, which is not identity)
    history = run(out, "--resume", "latest")
    assert [e["step"] for e in history] == [5, 10, 15]
    assert all(math.isfinite(x) for e in history for x in e["step_losses"])


def test_a_nan_loss_on_the_first_step_says_nothing_was_saved(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no checkpoint was saved before it"):
        run(tmp_path / "run", "--nan-at-step", "1")


def test_a_step_the_fp16_scaler_skipped_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import accelerate

    # fp16 needs a GPU: the run's precision is what the check reads (here the weights do turn
    # NaN, as no scaler skipped the step: the run must still not stop)
    monkeypatch.setattr(accelerate.Accelerator, "mixed_precision", property(lambda _: "fp16"))
    history = run(tmp_path / "run", "--nan-at-step", "3", "--epochs", "1")
    assert history[0]["step"] == 5
    warning = "steps 3-4: a loss is not finite (first here at step 3); the fp16 gradient scaler"
    assert warning in capfd.readouterr().err


def test_push_to_hub_uploads_best_with_a_card_in_one_commit(tmp_path: Path) -> None:
    config = ToyConfig(output_dir=str(tmp_path / "run"), push_to_hub="org/toy", hub_private=True)
    recipe = ToyRecipe(config, "toy")
    api = RecordingHubApi("https://hub/org/toy/commit/1")
    assert recipe.push_best(api=api) is None  # nothing saved yet: said, nothing sent
    assert api.calls == []
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text("{}")
    (best / "model.safetensors").write_bytes(b"weights")
    (best / "README.md").write_text("# toy\n\nTrained on a noisy line.\n")
    assert recipe.push_best(api=api) == "https://hub/org/toy/commit/1"
    (create, repo), (commit, _) = api.calls
    assert (create, repo["repo_id"], repo["private"]) == ("create_repo", "org/toy", True)
    assert commit == "create_commit"
    files = api.uploaded()
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    card = files["README.md"].decode()
    assert "pipeline_tag: zero-shot-audio-classification" in card
    assert "license: mit" in card
    assert "Trained on a noisy line." in card
    assert (best / "README.md").read_text().startswith("# toy")  # the folder is left as it was
