"""The fine-tuning recipe on FSDD: outputs, the learning check, resume after SIGKILL, two processes.

Runs are shared through module fixtures and, where no new process is needed, run in this
process (``finetune_audio.main``): a process start costs ~10 s of imports on a loaded CI core.
Under ``accelerate launch``: the uninterrupted run of the resume test (one process) and
``ddp_run`` (two processes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from clapkit.data import ManifestDataset, read_manifest
from clapkit.train.config import parse_config
from clapkit.train.demo import DIGITS

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import finetune_audio  # noqa: E402
from recipe_runner import INSTRUMENTED, RECIPES, kill_during_save, launch, run, run_failing  # noqa: E402

FSDD = RECIPES.parent / "data" / "fsdd"
QUIET = ("--preset", "smoke", "--log-with", "none")
# resume and DDP runs: 2 clips per speaker and digit (60 training clips), two held-out
# speakers, 2 epochs of 4 updates each (accumulation 2 in one process); every augmentation on
SMALL = (
    *QUIET, "--demo.clips-per-digit", "2", "--test-folds", "theo", "jackson", "--epochs", "2",
    "--global-batch-size", "16", "--batch-size", "8", "--mixup-alpha", "0.4",
)  # fmt: skip


def metrics_of(out: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def tiny_clap(out: Path) -> Path:
    """A tiny ClapModel at random init (the recipe's tiny CNN14 + a 1-layer GPT2 on the FSDD
    words), saved with ``save_pretrained``: its zero-shot is chance, its audio tower is what
    both the linear probe and full fine-tuning start from."""
    from clapkit.core import build_clap
    from clapkit.train.demo import CAPTION_TEMPLATES, build_encoders

    torch.manual_seed(0)
    texts = [t.format(d) for t in CAPTION_TEMPLATES for d in DIGITS]
    _, text = build_encoders("cnn14", "gpt2-eot", "tiny", texts, clip_seconds=0.8)
    clap = build_clap(
        audio=finetune_audio.tiny_encoder(), text=text, projection="linear", projection_dim=32,
        projection_dropout=0.0, init_temperature=0.07,
    )  # fmt: skip
    clap.save_pretrained(out / "clap")
    return out / "clap"


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_clap(tmp_path_factory.mktemp("clap"))


@pytest.fixture(scope="module")
def full_run(clap_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke preset (in this process): full fine-tuning of the CLAP's audio tower on three
    speakers, tested on theo."""
    out = tmp_path_factory.mktemp("full") / "run"
    finetune_audio.main([*QUIET, "--clap", str(clap_folder), "--test-folds", "theo",
                         "--output-dir", str(out)])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def ddp_run(clap_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke preset under ``accelerate launch`` with two CPU processes (DDP over gloo),
    small: two held-out speakers, one epoch each, TensorBoard on."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    launch("finetune_audio.py", *SMALL, "--epochs", "1", "--clap", str(clap_folder),
           "--log-with", "tensorboard", "--output-dir", str(out), processes=2)  # fmt: skip
    return out


def test_presets_say_what_the_paper_does() -> None:
    esc50 = finetune_audio.PRESETS["esc50"]
    assert (esc50.audio, esc50.data, esc50.fold_field) == ("htsat-22", "esc50=data/ESC-50-master",
                                                         "fold")  # fmt: skip
    assert (esc50.lr, esc50.global_batch_size, esc50.epochs, esc50.test_folds) == (
        1e-3,
        128,
        100,
        (),
    )
    assert finetune_audio.PAPER_ESC50 == (96.70, 98.25)
    preset, cfg = parse_config(
        finetune_audio.Config, finetune_audio.PRESETS,
        [*QUIET, "--mode", "linear-probe", "--mixup-alpha", "0.4", "--test-folds", "theo"],
        default="esc50",
    )  # fmt: skip
    assert preset == "smoke"
    assert (cfg.mode, cfg.mixup_alpha, cfg.test_folds, cfg.fold_field) == (
        "linear-probe",
        0.4,
        ("theo",),
        "speaker",
    )


def test_smoke_preset_under_accelerate_launch_on_two_processes(ddp_run: Path) -> None:
    config = json.loads((ddp_run / "config.json").read_text())
    assert (config["num_processes"], config["gradient_accumulation_steps"]) == (2, 1)
    assert config["classes"][0] == "eight"
    augment = config["augment"]
    assert (augment["mixup_alpha"], augment["time_shift"], augment["spec_augment"]) == (
        0.4,
        0.1,
        True,
    )
    metrics = metrics_of(ddp_run)
    folds = metrics["folds"]
    kept = [(f["fold"], f["epoch"], f["n_clips"]) for f in folds]
    assert kept == [("theo", 0, 20), ("jackson", 0, 20)]
    assert [(e["fold"], e["epoch"]) for e in metrics["epochs"]] == [("theo", 0), ("jackson", 0)]
    assert metrics["summary"]["folds"] == 2
    for name in ("run.json", "history.csv", "best/config.json", "best/model.safetensors",
                 "folds/theo/model.safetensors", "folds/jackson/model.safetensors"):  # fmt: skip
        assert (ddp_run / name).is_file(), name
    assert (ddp_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    report = (ddp_run / "report.md").read_text()
    assert "| fold | epoch kept | test clips | zero-shot accuracy % | full accuracy % |" in report
    for f in folds:  # the zero-shot score, too, was computed by both processes
        row = f"| {f['fold']} | 0 | 20 | {100 * f['zero_shot']:.2f} | {100 * f['score']:.2f} |"
        assert row in report
    assert "| mean +- std |" in report
    assert any((ddp_run / "logs").rglob("events.out.tfevents.*"))


def test_best_folder_loads_strictly_and_scores_what_the_report_says(full_run: Path) -> None:
    from clapkit.train.finetuning import AudioClassifier

    metrics = metrics_of(full_run)
    (fold,) = metrics["folds"]
    assert (fold["fold"], fold["epoch"], fold["n_clips"]) == ("theo", 2, 300)
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert metrics["summary"]["mean"] == fold["score"]
    model = AudioClassifier.from_pretrained(full_run / "best")
    assert model.class_names == tuple(sorted(DIGITS))
    test = ManifestDataset(read_manifest(full_run / "data" / "heldout_theo.jsonl"),
                           model.encoder.frontend, train=False)  # fmt: skip
    assert len(test) == 300
    with torch.no_grad():
        logits = model(torch.stack([test[i]["waveform"] for i in range(len(test))]))  # type: ignore[index]
    index = {name: i for i, name in enumerate(model.class_names)}
    truth = torch.tensor([index[r.labels[0]] for r in test.records])
    assert abs((logits.argmax(1) == truth).float().mean().item() - fold["score"]) < 1e-6


def test_full_fine_tuning_beats_zero_shot_and_the_linear_probe(
    full_run: Path, clap_folder: Path, tmp_path: Path
) -> None:
    """The learning check: on theo, never heard, full fine-tuning of the CLAP's audio tower
    beats the CLAP's zero-shot and a linear probe on the same (frozen) tower, trained alike."""
    probe = tmp_path / "probe"
    finetune_audio.main([*QUIET, "--clap", str(clap_folder), "--test-folds", "theo",
                         "--mode", "linear-probe", "--output-dir", str(probe)])  # fmt: skip
    (full,), (linear,) = metrics_of(full_run)["folds"], metrics_of(probe)["folds"]
    assert linear["zero_shot"] == full["zero_shot"]  # the same starting model
    # measured in this test (seed 0, CPU fp32, 300 clips of theo): full 0.260, linear probe
    # 0.107, zero-shot 0.090 (chance 0.10); run alone in a fresh process: 0.270, 0.113, 0.090
    assert full["score"] >= linear["score"] + 0.10, (full, linear)
    assert full["score"] >= full["zero_shot"] + 0.10, full
    assert full["score"] >= 0.20


def test_run_killed_mid_epoch_resumes_to_identical_weights(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    launch("finetune_audio.py", *SMALL, "--output-dir", str(whole))  # one process
    # SIGKILL in the second fold (updates 9-16), mid-epoch, while update 11's checkpoint is
    # being written (every update saved, each save held open before its completion marker)
    command = kill_during_save(
        "finetune_audio.py", [*SMALL, "--output-dir", str(parts)], 11, hold=0.3
    )
    assert not (parts / "checkpoints" / "step_00000011").exists()
    refused = run_failing([*command, "--resume", "latest", "--mode", "linear-probe"])
    assert "mode: 'full' in the checkpoint, 'linear-probe' now" in refused.stderr
    kept = (parts / "checkpoints" / "step_00000010" / "COMPLETE").read_text()
    finetune_audio.main([*SMALL, "--output-dir", str(parts), "--resume", "latest",
                         "--save-every-steps", "1"])  # fmt: skip
    # it continued from update 10: a run started over would have rewritten that checkpoint
    assert (parts / "checkpoints" / "step_00000010" / "COMPLETE").read_text() == kept
    final = "checkpoints/step_00000016_end/model.safetensors"
    expected, resumed = load_file(whole / final), load_file(parts / final)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert resumed[name].equal(tensor), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(metrics_of(whole)["epochs"]) == strip(metrics_of(parts)["epochs"])
    assert metrics_of(whole)["folds"] == metrics_of(parts)["folds"]
    assert [f["fold"] for f in metrics_of(parts)["folds"]] == ["theo", "jackson"]
    # every fold starts afresh: jackson alone trains to the weights it had after theo
    alone = tmp_path / "alone"
    finetune_audio.main([*SMALL, "--test-folds", "jackson", "--output-dir", str(alone)])
    weights = load_file(alone / "checkpoints/step_00000008_end/model.safetensors")
    assert all(weights[name].equal(tensor) for name, tensor in expected.items())
    assert metrics_of(alone)["folds"] == metrics_of(whole)["folds"][1:]


def fake_esc50(root: Path, clips_per_fold: int = 4) -> Path:
    """An ESC-50-master layout of 5 folds x ``clips_per_fold`` 1 s noise clips, two classes."""
    import soundfile

    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    generator = torch.Generator().manual_seed(0)
    for fold in range(1, 6):
        for i in range(clips_per_fold):
            target, category = (0, "dog") if i % 2 == 0 else (1, "rooster")
            name = f"{fold}-{1000 + i}-A-{target}.wav"
            wave = torch.randn(8000, generator=generator) * (0.1 if target == 0 else 0.5)
            soundfile.write(root / "audio" / name, wave.numpy(), 8000)
            rows.append(f"{name},{fold},{target},{category},False,{1000 + i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def test_esc50_layout_five_folds_and_the_paper_in_the_report(tmp_path: Path) -> None:
    """The default data path: the ESC-50 reader's folds, every rotation, the paper's figures."""
    root = fake_esc50(tmp_path / "ESC-50-master")
    out = tmp_path / "esc"
    finetune_audio.main([
        *QUIET, "--data", f"esc50={root}", "--fold-field", "fold", "--test-folds",
        "--demo.fsdd-root", "None", "--prompt-template", "None", "--epochs", "1",
        "--batch-size", "4", "--global-batch-size", "4", "--output-dir", str(out),
    ])  # fmt: skip
    metrics = metrics_of(out)
    assert [(f["fold"], f["n_clips"]) for f in metrics["folds"]] == [
        (str(k), 4) for k in range(1, 6)
    ]
    assert metrics["summary"]["folds"] == 5
    report = (out / "report.md").read_text()
    assert "on ESC-50 (5 folds): accuracy 96.70% -> 98.25%." in report
    assert "| mean +- std |" in report


def test_multilabel_manifest_trains_with_bce_and_reports_map(tmp_path: Path) -> None:
    """A manifest with two labels a clip (the digit and its parity) is a multilabel task."""
    lines = []
    for clip in sorted((FSDD / "recordings").glob("*_*_[01].flac")):
        digit, speaker, _ = clip.stem.split("_")
        parity = "even" if int(digit) % 2 == 0 else "odd"
        lines.append(json.dumps({"audio": str(clip), "labels": [DIGITS[int(digit)], parity],
                                 "speaker": speaker}))  # fmt: skip
    manifest = tmp_path / "digits.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    finetune_audio.main([*QUIET, "--data", str(manifest), "--test-folds", "theo", "--epochs", "1",
                         "--output-dir", str(out)])  # fmt: skip
    metrics = metrics_of(out)
    (fold,) = metrics["folds"]
    assert set(fold) >= {"mAP", "score"}
    assert 0.0 < fold["mAP"] <= 1.0
    assert metrics["summary"]["metric"] == "mAP"
    assert (
        "| fold | epoch kept | test clips | zero-shot mAP % | full mAP % |"
        in (out / "report.md").read_text()
    )


def test_each_fold_trains_on_its_own_clips_with_loader_workers(tmp_path: Path) -> None:
    """With DataLoader workers, the second fold's batches come from its own training set: the
    loader's workers start afresh for each fold (persistent ones would keep the first fold's
    records, which the main process replaced)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    run([
        sys.executable, str(INSTRUMENTED), "--record-keys", str(keys),
        str(RECIPES / "finetune_audio.py"), *QUIET, "--demo.clips-per-digit", "2",
        "--test-folds", "theo", "jackson", "--epochs", "1", "--num-workers", "1",
        "--global-batch-size", "8", "--batch-size", "8", "--output-dir", str(tmp_path / "run"),
    ])  # fmt: skip
    seen = [line.split("\t")[1] for line in (keys / "keys.rank0.tsv").read_text().splitlines()]
    per_fold = 56  # 60 training clips (3 speakers x 10 digits x 2), whole batches of 8
    assert len(seen) == 2 * per_fold
    speakers = [{key.split("_")[1] for key in fold} for fold in (seen[:per_fold], seen[per_fold:])]
    assert speakers == [{"jackson", "nicolas", "yweweler"}, {"theo", "nicolas", "yweweler"}]
