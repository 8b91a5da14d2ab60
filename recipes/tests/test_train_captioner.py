"""The captioner recipe on its smoke preset: outputs, learning, the saved model, exact resume."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from recipe_runner import RECIPES, launch, python  # noqa: E402

import clapkit.train.presets.captioning as presets  # noqa: E402
from clapkit.caption import ClapCaptioner  # noqa: E402

SMOKE = [sys.executable, str(RECIPES / "train_captioner.py"), "--preset", "smoke", "--output-dir"]
TASK = "heldout_theo"  # the smoke test set: FSDD's held-out speaker


def test_presets_carry_their_own_settings() -> None:
    audiocaps, clotho = presets.AUDIOCAPS, presets.CLOTHO
    changed = {
        f.name
        for f in dataclasses.fields(audiocaps)
        if getattr(audiocaps, f.name) != getattr(clotho, f.name)
    }
    # Clotho: five captions per clip, each a training pair, shorter, with a shorter warm-up
    assert changed == {"captions_per_clip", "max_caption_tokens", "warmup_steps", "output_dir"}
    assert (clotho.captions_per_clip, clotho.max_caption_tokens, clotho.warmup_steps) == (
        "all", 40, 2000,
    )  # fmt: skip
    assert (audiocaps.lr, audiocaps.warmup_steps, audiocaps.global_batch_size) == (2e-5, 5000, 40)
    assert "SPIDEr .455" in presets.PRESET_NOTES["audiocaps"]
    assert "SPIDEr .271" in presets.PRESET_NOTES["clotho"]
    assert presets.__doc__ is not None
    assert ".455" in presets.__doc__
    assert ".271" in presets.__doc__
    smoke = presets.captioning_presets(fsdd_root="somewhere/fsdd")["smoke"]
    assert (smoke.demo.fsdd_root, smoke.demo.size) == ("somewhere/fsdd", "tiny")


def test_smoke_preset_trains_evaluates_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = launch("train_captioner.py", "--preset", "smoke", "--output-dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert [e["step"] for e in epochs] == [8, 16, 24]  # 15 micro-batches, accumulation 2
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    for name in ("bleu_1", "bleu_4", "rouge_l", "cider_d"):
        assert all(0.0 <= e[TASK][name] <= 10.0 for e in epochs), name
    assert "spice" in epochs[-1]["missing_metrics"] or "spider" in epochs[-1][TASK]
    assert metrics["best"]["score"] == max(e[TASK]["score"] for e in epochs)
    config = json.loads((out / "config.json").read_text())
    assert config["gradient_accumulation_steps"] == 2
    assert config["preset"] == "smoke"
    examples = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 4
    assert examples[0]["references"] == ["a man says the digit zero"]
    captioner = ClapCaptioner.from_pretrained(out / "best")
    assert len(captioner.generate([examples[0]["audio"]], beam_size=2, max_new_tokens=5)) == 1
    report = (out / "report.md").read_text()
    assert f"| epoch | train loss | {TASK} | lr | s |" in report  # no zero-shot column
    assert all(len(e["step_losses"]) == 8 for e in epochs)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert any((out / "logs").rglob("events.out.tfevents.*"))
    assert "checkpoint saved: step_00000024_end" in done.stderr


def kill_after_checkpoint(out: Path, name: str) -> str:
    """Start the smoke run and SIGKILL it as soon as it reports checkpoint ``name``."""
    command = [*SMOKE, str(out), "--log-with", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(command, cwd=RECIPES.parent, stderr=subprocess.PIPE, text=True,
                             env=env)  # fmt: skip
    assert child.stderr is not None
    seen = []
    for line in child.stderr:
        seen.append(line)
        if f"checkpoint saved: {name}" in line:
            os.kill(child.pid, signal.SIGKILL)  # no clean stop: no flush, no end of training
            break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def test_sigkill_mid_epoch_then_resume_ends_bit_identical(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    python("train_captioner.py", "--preset", "smoke", "--output-dir", str(whole),
           "--log-with", "none")  # fmt: skip
    # step 9 is epoch 1's first update (of 8): killed mid-epoch, 7 updates before its end
    kill_after_checkpoint(parts, "step_00000009")
    assert not (parts / "checkpoints" / "step_00000024_end").exists()
    before = {p.name: p.stat().st_mtime_ns for p in (parts / "checkpoints").iterdir()}
    refused = subprocess.run(
        [*SMOKE, str(parts), "--resume", "latest", "--lr", "0.5"],
        cwd=RECIPES.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1  # another config: refused, nothing written
    assert "lr: 0.01 in the checkpoint, 0.5 now" in refused.stderr
    done = python("train_captioner.py", "--preset", "smoke", "--output-dir", str(parts),
                  "--log-with", "none", "--resume", "latest")  # fmt: skip
    resumed = re.search(r"resumed from \S*/(step_\d+): epoch (\d+), step (\d+), batch (\d+)",
                        done.stderr)  # fmt: skip
    assert resumed is not None, done.stderr
    checkpoint, epoch, step, batch = resumed.groups()
    assert checkpoint in before
    assert not checkpoint.endswith("_end")
    assert (int(epoch), int(step)) == (1, int(checkpoint[5:]))
    assert int(batch) > 0
    # the resumed process continued: the checkpoints it found are untouched, none redone
    after = {p.name: p.stat().st_mtime_ns for p in (parts / "checkpoints").iterdir()}
    assert all(after[name] == mtime for name, mtime in before.items() if name.startswith("step"))
    assert f"checkpoint saved: step_{int(step):08d}" not in done.stderr
    final = "checkpoints/step_00000024_end/model.safetensors"
    expected, got = load_file(whole / final), load_file(parts / final)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert got[name].equal(tensor), name
    strip = lambda m: [{k: v for k, v in e.items() if k != "seconds"} for e in m["epochs"]]  # noqa: E731
    metrics = [json.loads((o / "metrics.json").read_text()) for o in (whole, parts)]
    assert strip(metrics[0]) == strip(metrics[1])  # the losses and test metrics of every epoch
