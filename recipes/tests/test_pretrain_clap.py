"""The pretraining recipe on its smoke preset: outputs, resume after SIGKILL, bad files.

Several processes (DDP equivalence, shards): test_distributed.py; the demo: test_demo.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

from safetensors.torch import load_file

import clapkit.train.presets.clap as pretrain_clap_presets
from clapkit.train.demo import fsdd_manifests

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import pretrain_clap  # noqa: E402
from recipe_runner import RECIPES, kill_during_save, launch, python, run_failing  # noqa: E402

FSDD = RECIPES.parent / "data" / "fsdd"


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_presets_differ_where_the_paper_does() -> None:
    presets = pretrain_clap.PRESETS
    table1, table2 = presets["table1-htsat22-gpt2"], presets["table2-htsat22-gpt2"]
    changed = {
        f.name
        for f in dataclasses.fields(table1)
        if getattr(table1, f.name) != getattr(table2, f.name)
    }
    # the paper's Table 2 changes the data (4.6M pairs of 20 sources) and the evaluation suite
    assert changed == {"train_shards", "samples_per_epoch", "eval_suite", "output_dir"}
    assert table2.samples_per_epoch == 4_600_000
    assert (table1.eval_suite, table2.eval_suite) == ("table1", "table2")
    assert table2.train_shards == ("data/table2-shards/*/*.tar",)
    assert len(pretrain_clap_presets.TABLE2_SOURCES) == 20
    assert pretrain_clap_presets.TABLE2_SCORES["esc50"] == 0.939
    assert ".939" in pretrain_clap.NOTES["table2-htsat22-gpt2"]
    assert all(name in pretrain_clap.NOTES for name in presets)
    assert (table1.lr, table1.global_batch_size, table1.epochs) == (1e-3, 1536, 40)
    assert "0.480" in pretrain_clap.NOTES["table1-htsat22-gpt2"]
    preset, cfg = pretrain_clap.parse_config(
        pretrain_clap.Config,
        presets,
        ["--preset", "smoke", "--no-accumulate-negatives", "--epochs", "3"],
        default="table1-htsat22-gpt2",
    )
    assert preset == "smoke"
    assert (cfg.accumulate_negatives, cfg.epochs, cfg.demo.size) == (False, 3, "tiny")


def test_smoke_preset_under_accelerate_launch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = launch("pretrain_clap.py", "--preset", "smoke", "--output-dir", str(out))
    metrics = metrics_of(out)
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(0.0 <= e["heldout_theo"]["accuracy"] <= 1.0 for e in epochs)
    assert metrics["best"]["score"] == max(e["zero_shot_score"] for e in epochs)
    # the contrastive loss goes down (fixed seed, CPU: deterministic)
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["demo"]["size"] == "tiny"
    assert config["gradient_accumulation_steps"] == 2
    for name in ("report.md", "curves.png", "best/config.json", "best/model.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| epoch | train loss | heldout_theo |" in (out / "report.md").read_text()
    assert any((out / "logs").rglob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "step_00000004_end" / "config.json").is_file()
    assert "100%" in done.stderr  # the progress bar
    # throughput in the report and in TensorBoard
    report = (out / "report.md").read_text()
    assert "| samples/s | data wait s/step | compute s/step | TFLOP/s |" in report
    # counted at 8 caption tokens and the text encoder's longest (32): more tokens, more FLOPs
    flops = metrics["flops_per_sample"]
    assert list(flops) == ["8", "32"]
    assert 1e6 < flops["8"] < flops["32"]
    assert config["precision"] == "no"  # launched with --mixed_precision no: the CPU default
    assert all(e["samples_per_s"] > 0 and e["compute_s"] > 0 for e in epochs)
    assert (out / "history.csv").read_text().splitlines()[0].startswith("epoch,step,train_loss")
    # the run's identity and an honest model card
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0
    assert len(run["config_hash"]) == 16
    assert run["config"]["demo"]["size"] == "tiny"
    card = (out / "best" / "README.md").read_text()
    assert "preset `smoke`" in card
    assert "heldout_theo" in card
    assert "Hub" not in card

    evaluation = tmp_path / "eval"
    launch(
        "evaluate.py",
        "--checkpoint",
        str(out / "best"),
        "--manifest",
        str(out / "data" / "heldout_theo.jsonl"),
        "--template",
        "a man says the digit {}",
        "--output-dir",
        str(evaluation),
    )
    result = json.loads((evaluation / "metrics.json").read_text())["heldout_theo"]
    assert result["n_clips"] == 20
    # the evaluation recipe and the training run's own evaluation give one number
    assert abs(result["accuracy"] - metrics["best"]["heldout_theo"]["accuracy"]) < 1e-6
    assert (evaluation / "confusion" / "heldout_theo.png").read_bytes()[:4] == b"\x89PNG"


def test_run_killed_mid_epoch_resumes_to_identical_weights(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    quiet = ("--preset", "smoke", "--log-with", "none")
    python("pretrain_clap.py", *quiet, "--output-dir", str(whole))
    # SIGKILL in the middle of epoch 0 (4 steps), while step 3's checkpoint is being written
    # (every step saved, each save held open a second before its completion marker)
    command = kill_during_save("pretrain_clap.py", [*quiet, "--output-dir", str(parts)], 3, hold=1)
    assert not (parts / "metrics.json").exists()
    assert not (parts / "checkpoints" / "step_00000003").exists()
    # the folder holds a run: a new start is refused, a resume with other settings too
    refused = run_failing(command)
    assert "already holds a run" in refused.stderr
    assert "--resume latest" in refused.stderr
    refused = run_failing([*command, "--resume", "latest", "--seed", "1"])
    assert "seed: 0 in the checkpoint, 1 now" in refused.stderr
    kept = (parts / "checkpoints" / "step_00000002" / "COMPLETE").read_text()
    done = python("pretrain_clap.py", *quiet, "--output-dir", str(parts), "--resume", "latest")
    # it continued from step 2: a run started over would have rewritten step 2's checkpoint
    assert (parts / "checkpoints" / "step_00000002" / "COMPLETE").read_text() == kept
    assert ".step_00000003.partial (an interrupted save)" in done.stderr
    assert "resumed from" in done.stderr
    assert "step_00000002: epoch 0, step 2, batch 4 of the epoch" in done.stderr  # 2 micro-steps
    final = "checkpoints/step_00000008_end/model.safetensors"
    expected, resumed = load_file(whole / final), load_file(parts / final)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert resumed[name].equal(tensor), name
    strip = lambda epochs: [  # noqa: E731
        {
            k: v
            for k, v in e.items()
            if k not in ("seconds", "samples_per_s", "data_wait_s", "compute_s", "tflops")
        }
        for e in epochs
    ]
    assert strip(metrics_of(whole)["epochs"]) == strip(metrics_of(parts)["epochs"])


def test_corrupt_file_is_skipped_and_reported(tmp_path: Path) -> None:
    train, heldout = fsdd_manifests(FSDD, tmp_path / "data", "theo", clips_per_digit=2)
    broken = tmp_path / "data" / "broken.flac"
    broken.write_bytes(b"this is not a flac file" * 20)
    lines = Path(train).read_text().splitlines()
    lines.insert(5, json.dumps({"audio": "broken.flac", "caption": "a man says the digit one"}))
    Path(train).write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    done = python(
        "pretrain_clap.py",
        "--preset",
        "smoke",
        "--output-dir",
        str(out),
        "--log-with",
        "none",
        "--train-manifest",
        train,
        "--eval-manifest",
        heldout,
    )
    metrics = metrics_of(out)
    skipped = metrics["skipped_files"]
    assert list(skipped["reasons"]) == [str(broken)]
    assert skipped["count"] == 2  # once per epoch, in total
    assert skipped["per_epoch"] == {"0": 1, "1": 1}
    assert skipped["times"] == {str(broken): 2}
    assert [(e["skipped_files"], e["skipped_files_total"]) for e in metrics["epochs"]] == [
        (1, 1),
        (1, 2),
    ]
    report = (out / "report.md").read_text()
    assert "2 skips over 2 epochs (epoch 0: 1, epoch 1: 1) of 1 file:" in report
    assert f"- `{broken}`: " in report
    assert "skipped 2 times" in report
    assert "epoch 1 skipped 1 bad clips (2 over the run)" in done.stderr
    assert "skipping bad audio" in done.stderr
    assert "broken.flac" in done.stderr


def test_the_launchers_precision_is_the_runs_unless_the_recipe_says(tmp_path: Path) -> None:
    short = ["--preset", "smoke", "--epochs", "1", "--demo.clips-per-digit", "1",
             "--log-with", "none"]  # fmt: skip
    launch("pretrain_clap.py", *short, "--output-dir", str(tmp_path / "bf16"), precision="bf16")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert (config["mixed_precision"], config["precision"]) == ("auto", "bf16")
    epoch = metrics_of(tmp_path / "bf16")["epochs"][0]  # bf16 updates on the CPU, finite
    assert all(math.isfinite(loss) for loss in epoch["step_losses"])
    assert len(epoch["step_losses"]) == 2
    # the recipe's own flag wins over the launcher's
    out = tmp_path / "flag"
    launch("pretrain_clap.py", *short, "--mixed-precision", "no", "--output-dir", str(out),
           precision="bf16")  # fmt: skip
    assert json.loads((out / "config.json").read_text())["precision"] == "no"
