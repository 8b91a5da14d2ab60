"""Every preset of every training recipe at the paper's model size, on two processes.

Each run is what a user launches (``accelerate launch --multi_gpu --num_processes 2``; DDP over
gloo on the CPU, the code path of two GPUs) with random weights, tiny batches and a few clips:
two updates, a checkpoint, the epoch's end. Checked through ``checked_run.py``: before the
first update every trainable parameter of the real-size model holds a gradient on every
process, and at the end both processes hold identical weights. One preset per recipe is also
cut after its first update and resumed: its final weights equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from assets import Assets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
    "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
    "--main_process_port", "0", "--num_cpu_threads_per_process", "1",
]  # fmt: skip
COMMON = ["--log-with", "none", "--num-workers", "0", "--epochs", "1"]
TWO_UPDATES = ["--global-batch-size", "4", "--batch-size", "2"]
MIN_PARAMETERS = 10_000_000
"""Fewer parameters than this would mean a small model stood in for the paper's."""


def _clap_args(assets: Assets, text: str) -> list[str]:
    return ["--text-pretrained", str(assets.text[text]), "--eval-suite", "None", "--clip-seconds",
            "1.0", *TWO_UPDATES]  # fmt: skip


TABLE1 = {
    "table1-cnn14-bert": "bert",
    "table1-htsat-clip": "clip",
    "table1-htsat-roberta": "roberta",
    "table1-htsat-gpt2": "gpt2-eot",
    "table1-htsat22-roberta": "roberta",
    "table1-htsat22-clip": "clip",
    "table1-htsat22-gpt2": "gpt2-eot",
}


def preset_runs(assets: Assets) -> dict[str, tuple[str, list[str]]]:
    """name -> (recipe file, its arguments) of every preset a user runs at the paper's size."""
    runs = {
        name: (
            "pretrain_clap.py",
            ["--preset", name, "--train-manifest", str(assets.train), *_clap_args(assets, text)],
        )
        for name, text in TABLE1.items()
    }
    runs["table2-htsat22-gpt2"] = ("pretrain_clap.py", [
        "--preset", "table2-htsat22-gpt2", "--train-shards", str(assets.shards / "*.tar"),
        "--samples-per-epoch", "8", *_clap_args(assets, "gpt2-eot"),
    ])  # fmt: skip
    runs["pengi-22"] = ("pretrain_htsat22.py", [
        "--preset", "pengi-22", "--train-manifest", str(assets.multitask), "--samples-per-epoch",
        "8", "--language-model", str(assets.text["gpt2-eot"]), "--clip-seconds", "1.0",
        "--max-answer-tokens", "8", *TWO_UPDATES,
    ])  # fmt: skip
    for mode in ("full", "linear-probe"):
        runs[f"esc50-{mode}"] = ("finetune_audio.py", [
            "--preset", "esc50", "--mode", mode, "--data", str(assets.labelled), "--fold-field",
            "speaker", "--test-folds", "jackson", "--warmup-epochs", "0", *TWO_UPDATES,
        ])  # fmt: skip
    for preset in ("clotho", "audiocaps"):
        runs[preset] = ("train_captioner.py", [
            "--preset", preset, "--clap", str(assets.clap), "--language-model",
            str(assets.text["gpt2-eot"]), "--train-manifest", str(assets.train), "--test-manifest",
            str(assets.test), "--references-per-item", "None", "--captions-per-clip", "sample",
            "--beam-size", "2",
            "--max-new-tokens", "3", "--examples", "2", *TWO_UPDATES,
        ])  # fmt: skip
    return runs


PRESETS = [*TABLE1, "table2-htsat22-gpt2", "pengi-22", "esc50-full", "esc50-linear-probe",
           "clotho", "audiocaps"]  # fmt: skip
RESUMED = {"table1-htsat22-gpt2", "pengi-22", "esc50-full", "clotho"}
"""One preset per recipe is also cut after its first update and resumed."""


def launch(recipe: str, report: Path, args: list[str], out: Path) -> None:
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    command = [*LAUNCH, str(HERE / "checked_run.py"), recipe, str(report), *args, *COMMON,
               "--output-dir", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-8000:]}")


def reports(folder: Path) -> list[dict[str, object]]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_on_two_processes_at_its_real_size(
    preset: str, assets: Assets, tmp_path: Path
) -> None:
    try:
        _check_preset(preset, assets, tmp_path)
    finally:  # a run folder holds gigabytes of checkpoints: the suite keeps one at a time
        for name in ("run", "cut"):
            shutil.rmtree(tmp_path / name, ignore_errors=True)


def _check_preset(preset: str, assets: Assets, tmp_path: Path) -> None:
    recipe, args = preset_runs(assets)[preset]
    # a checkpoint after every update where the run is resumed, else the epoch's end only
    args += ["--save-every-steps", "1" if preset in RESUMED else "1000"]
    out, report = tmp_path / "run", tmp_path / "report"
    launch(recipe, report, args, out)
    ranks = reports(report)
    for rank in ranks:
        first = rank["first_update"]
        assert isinstance(first, dict)
        assert first["no_gradient"] == [], f"{preset}: trainable parameters without a gradient"
        assert first["parameters"] > MIN_PARAMETERS
        assert first["trainable"] > 0  # a linear probe trains its head alone
        assert rank["step"] == 2
    assert ranks[0]["weights"] == ranks[1]["weights"], f"{preset}: the processes diverged"
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert any(name.endswith("_end") for name in checkpoints), checkpoints
    if preset not in RESUMED:
        return
    # cut after the first update: the run folder as the checkpoint of step 1 left it
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    for name in ("run.json", "config.json"):
        shutil.copy2(out / name, cut / name)
    shutil.copytree(out / "checkpoints" / "step_00000001", cut / "checkpoints" / "step_00000001",
                    copy_function=os.link)  # fmt: skip
    resumed = tmp_path / "resumed-report"
    launch(recipe, resumed, [*args, "--resume", "latest"], cut)
    again = reports(resumed)
    assert again[0]["step"] == 2
    assert again[0]["weights"] == again[1]["weights"] == ranks[0]["weights"], (
        f"{preset}: the resumed run's weights differ from the uninterrupted run's"
    )
