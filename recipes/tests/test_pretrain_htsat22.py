"""HTSAT-22 pretraining on its smoke preset: outputs, the learning check, the encoder file's two
loaders, resume after SIGKILL, two processes."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file

from clapkit.audio import (
    CheckpointError,
    fit_length,
    htsat_22,
    load_audio,
    load_audio_encoder,
    save_weights,
)
from clapkit.caption import PrefixLanguageModel
from clapkit.core import create_audio_encoder
from clapkit.data import read_multitask_manifest
from clapkit.train.demo import DIGITS
from clapkit.train.multitask import build_model
from clapkit.train.presets.htsat22 import (
    NOTES,
    PENGI22,
    PENGI_22,
    SMOKE,
    htsat22_presets,
    parse_weights,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_runner import RECIPES, kill_when, launch

FSDD = RECIPES.parent / "data" / "fsdd" / "recordings"
TRAIN_SPEAKERS, HELDOUT = ("jackson", "nicolas", "yweweler"), "theo"
QUIET = ("--preset", "smoke", "--log-with", "none")
LAUNCH_ENV = {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
LAST = "checkpoints/step_00000060_end/model.safetensors"  # 6 epochs x 10 updates


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run under ``accelerate launch`` (1 process), shared by the tests below."""
    out = tmp_path_factory.mktemp("htsat22") / "run"
    launch("pretrain_htsat22.py", *QUIET, "--output-dir", str(out))
    return out


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_paper_preset_is_the_papers_setting() -> None:
    cfg = htsat22_presets()["pengi-22"]
    assert (cfg.audio, cfg.size, cfg.language_model, cfg.freeze_language_model) == (
        "htsat-22", "full", "gpt2", True,
    )  # fmt: skip
    assert (cfg.clip_seconds, cfg.prefix_length, cfg.mapper, cfg.mapper_depth) == (
        7.0, 40, "transformer", 8,
    )  # fmt: skip
    frontend = htsat_22().frontend
    assert (frontend.sample_rate, frontend.n_fft, frontend.hop_length, frontend.n_mels) == (
        44100, 1024, 320, 64,
    )  # fmt: skip
    assert (frontend.fmin, frontend.fmax) == (50.0, 8000.0)
    families = PENGI_22
    assert len(families) == len({f[0] for f in families}) == 22
    assert "22 Pengi task families" in NOTES["pengi-22"]
    assert parse_weights(("a=1", "b=2.5")) == {"a": 1.0, "b": 2.5}
    with pytest.raises(SystemExit, match="'a:1' is not NAME=NUMBER"):
        parse_weights(("a:1",))


def test_smoke_trains_and_writes_its_outputs(smoke: Path) -> None:
    epochs = metrics_of(smoke)["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(6))
    losses = [e["train_loss"] for e in epochs]
    assert losses[-1] < 0.7 * losses[0]  # measured 1.83 -> 0.98 (seed 0, CPU fp32)
    assert all("digit" in e and 0.0 <= e["digit"]["accuracy"] <= 1.0 for e in epochs)
    config = json.loads((smoke / "config.json").read_text())
    assert (config["gradient_accumulation_steps"], config["tasks"]) == (2, ["digit", "speaker"])
    pairs = read_multitask_manifest(smoke / "data" / "multitask_train.jsonl")
    assert {(r.task, r.prompt) for r in pairs} == {
        ("digit", "which digit"), ("speaker", "which speaker"),
    }  # fmt: skip
    assert {r.answer for r in pairs if r.task == "speaker"} == set(TRAIN_SPEAKERS)
    for name in ("report.md", "history.csv", "curves.png", "best/README.md", "run.json"):
        assert (smoke / name).is_file(), name
    assert "| epoch | train loss | digit |" in (smoke / "report.md").read_text()
    # the encoder file carries its config; the whole model reloads and answers
    encoder = load_audio_encoder(smoke / "best" / "audio_encoder.safetensors")
    assert encoder.architecture == "htsat"
    model = PrefixLanguageModel.from_pretrained(smoke / "best" / "prefix_lm")
    (answer,) = model.generate_answers(FSDD / "7_theo_0.flac", ["which digit"], max_new_tokens=3)
    assert answer in DIGITS
    saved = load_file(smoke / "best" / "audio_encoder.safetensors")
    for name, tensor in model.audio_encoder.state_dict().items():
        assert saved[name].equal(tensor), name


# -- the learning check --------------------------------------------------------------------
def clips(speakers: tuple[str, ...], per_digit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FSDD clips at 8 kHz, fitted to 0.8 s (centre crop or pad), and their digits."""
    waves, digits = [], []
    for speaker in speakers:
        for digit in range(10):
            for index in range(per_digit):
                wave = load_audio(FSDD / f"{digit}_{speaker}_{index}.flac", 8000)
                mode = "center_crop" if wave.shape[-1] > 6400 else "pad"
                waves.append(fit_length(wave, 6400, mode))
                digits.append(digit)
    return torch.stack(waves), torch.tensor(digits)


def probe_accuracy(encoder: torch.nn.Module, seed: int = 0) -> float:
    """A linear probe on the frozen encoder's embeddings: trained on the three training
    speakers (10 clips per digit), scored on the unheard speaker's 100 clips."""
    train_x, train_y = clips(TRAIN_SPEAKERS, 10)
    test_x, test_y = clips((HELDOUT,), 10)
    encoder.eval()
    with torch.no_grad():
        train_f, test_f = encoder(train_x).embedding, encoder(test_x).embedding
    mean, std = train_f.mean(0), train_f.std(0) + 1e-6
    train_f, test_f = (train_f - mean) / std, (test_f - mean) / std
    torch.manual_seed(seed)
    probe = torch.nn.Linear(train_f.shape[1], 10)
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(probe(train_f), train_y)
        optimizer.zero_grad()
        (loss + 1e-3 * probe.weight.pow(2).sum()).backward()
        optimizer.step()
    return float((probe(test_f).argmax(-1) == test_y).float().mean())


@pytest.mark.xfail(
    strict=True,
    reason="not reached at smoke scale: probe accuracy on the unheard speaker, random init 0.16; "
    "after 150 updates (--epochs 10 --samples-per-epoch 480) 0.24 (seed 0), 0.14 (seed 1); 0.21 "
    "after 300; the held-out digit answers stay at their prior (accuracy 0.10)",
)
def test_probe_on_the_pretrained_encoder_beats_the_random_one(smoke: Path) -> None:
    texts = [t for r in read_multitask_manifest(smoke / "data" / "multitask_train.jsonl")
             for t in (r.prompt, r.answer)]  # fmt: skip
    set_seed(0)  # the recipe's seed before it builds the model: its very initial weights
    initial = build_model(SMOKE, texts).audio_encoder
    pretrained = load_audio_encoder(smoke / "best" / "audio_encoder.safetensors")
    random_accuracy, trained_accuracy = probe_accuracy(initial), probe_accuracy(pretrained)
    print(f"\nprobe on {HELDOUT}: random {random_accuracy:.2f}, pretrained {trained_accuracy:.2f}")
    assert trained_accuracy >= random_accuracy + MARGIN


MARGIN = 0.10
"""The claim (chance is 0.10): the pretrained encoder's probe 10 points above the random one's."""


# -- the encoder file's loaders ----------------------------------------------------------
def test_paper_size_encoder_file_loads_strictly_in_both_loaders(tmp_path: Path) -> None:
    """What ``best/audio_encoder.safetensors`` is at paper size: ``htsat_22(weights=...)`` and
    ``pretrain_clap.py --audio-weights`` (``create_audio_encoder("htsat-22", weights=...)``,
    what clapkit.train.demo.build_encoders calls) load it strictly."""
    from transformers import GPT2Config, GPT2LMHeadModel

    lm = tmp_path / "lm"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=64)).save_pretrained(lm)
    cfg = dataclasses.replace(
        PENGI22, language_model=str(lm), mapper_depth=1, mapper_heads=2,
        tokenizer=str(RECIPES.parent / "data" / "reference" / "tokenizers" / "gpt2"),
    )  # fmt: skip
    encoder = build_model(cfg, []).audio_encoder
    assert all(not p.requires_grad for p in encoder.head.parameters())  # no loss reaches it
    with torch.no_grad():
        encoder.head.weight.add_(1.0)  # a trained file differs from any fresh init
    path = tmp_path / "audio_encoder.safetensors"
    save_weights(encoder, path)  # what save_best writes
    for loaded in (htsat_22(weights=path), create_audio_encoder("htsat-22", weights=path)):
        for name, tensor in encoder.state_dict().items():
            assert loaded.state_dict()[name].equal(tensor), name
    tensors = load_file(path)
    tensors.pop("head.bias")
    save_file(tensors, str(tmp_path / "short.safetensors"))
    with pytest.raises(CheckpointError, match=r"head\.bias"):
        htsat_22(weights=tmp_path / "short.safetensors")


# -- resume and processes -----------------------------------------------------------------
def test_run_killed_mid_epoch_resumes_to_identical_weights(smoke: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    # the recipe itself, not `accelerate launch`: SIGKILL on the launcher would leave its child
    # training on (CPU only, as the launcher's runs)
    command = [sys.executable, str(RECIPES / "pretrain_htsat22.py"), *QUIET, "--output-dir",
               str(parts)]  # fmt: skip
    # step 24 is update 4 of epoch 2's 10: SIGKILL as soon as its checkpoint is complete
    kill_when(command, parts / "checkpoints" / "step_00000024", extra_env=LAUNCH_ENV)
    assert not (parts / "checkpoints" / "step_00000030_end").exists()
    kept = (parts / "checkpoints" / "step_00000020" / "COMPLETE").read_text()
    done = launch("pretrain_htsat22.py", *QUIET, "--output-dir", str(parts), "--resume", "latest")
    assert "step_00000024: epoch 2, step 24, batch 8 of the epoch" in done.stderr
    # it continued from step 24: a run started over would have rewritten step 20's checkpoint
    assert (parts / "checkpoints" / "step_00000020" / "COMPLETE").read_text() == kept
    expected, resumed = load_file(smoke / LAST), load_file(parts / LAST)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert resumed[name].equal(tensor), name
    keep = ("epoch", "step", "train_loss", "digit")
    strip = lambda epochs: [{k: e[k] for k in keep} for e in epochs]  # noqa: E731
    assert strip(metrics_of(smoke)["epochs"]) == strip(metrics_of(parts)["epochs"])


def test_two_processes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launch(
        "pretrain_htsat22.py", *QUIET, "--output-dir", str(out), "--epochs", "1",
        "--samples-per-epoch", "64", processes=2,
    )  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert (config["num_processes"], config["gradient_accumulation_steps"]) == (2, 1)
    (epoch,) = metrics_of(out)["epochs"]
    assert epoch["step"] == 2  # 64 draws, 32 per update over both processes
    assert 0.0 <= epoch["digit"]["accuracy"] <= 1.0  # every held-out clip answered once
    assert (out / "best" / "audio_encoder.safetensors").is_file()
