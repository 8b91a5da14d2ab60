"""HTSAT-22 pretraining on its smoke preset: outputs, the learning check, the encoder file's two
loaders, resume after SIGKILL, two processes."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any

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
from clapkit.core import create_audio_tower
from clapkit.data import read_multitask_manifest
from clapkit.train.demo import DIGITS
from clapkit.train.presets.htsat22 import (
    NOTES,
    PAPER,
    PENGI_TASK_FAMILIES,
    SMOKE,
    htsat22_presets,
    parse_weights,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_runner import RECIPES, kill_when, launch

sys.path.insert(0, str(RECIPES))
from pretrain_htsat22 import build_prefix_model

FSDD = RECIPES.parent / "data" / "fsdd" / "recordings"
TRAIN_SPEAKERS, HELDOUT = ("jackson", "nicolas", "yweweler"), "theo"
QUIET = ("--preset", "smoke", "--log-with", "none")
LAUNCH_ENV = {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
LAST = "checkpoints/step_00000450_end/model.safetensors"  # 6 epochs x 75 updates


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
    assert (cfg.audio, cfg.demo.size, cfg.language_model, cfg.freeze_language_model) == (
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
    families = PENGI_TASK_FAMILIES
    assert len(families) == len({f[0] for f in families}) == 22
    assert "22 Pengi task families" in NOTES["pengi-22"]
    assert parse_weights(("a=1", "b=2.5")) == {"a": 1.0, "b": 2.5}
    with pytest.raises(SystemExit, match="'a:1' is not NAME=NUMBER"):
        parse_weights(("a:1",))


def test_smoke_trains_and_writes_its_outputs(smoke: Path) -> None:
    epochs = metrics_of(smoke)["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(6))
    losses = [e["train_loss"] for e in epochs]
    assert losses[-1] < 0.5 * losses[0]  # measured 1.42 -> 0.32 (seed 0, CPU fp32)
    assert all("digit" in e and 0.0 <= e["digit"]["accuracy"] <= 1.0 for e in epochs)
    # the unheard speaker's digits, answered by greedy decoding: above their prior (chance 0.10)
    assert metrics_of(smoke)["best"]["digit"]["accuracy"] >= 0.2  # measured 0.37 (seed 0)
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
@functools.cache
def clips(
    speakers: tuple[str, ...], takes: int, rate: int, samples: int, fill: str
) -> tuple[torch.Tensor, ...]:
    """The first ``takes`` FSDD clips of each speaker and digit at ``rate``, fitted to
    ``samples`` (centre crop, or ``fill``), with their digits and speakers."""
    waves, digits, voices = [], [], []
    for voice, speaker in enumerate(speakers):
        for digit in range(10):
            for index in range(takes):
                wave = load_audio(FSDD / f"{digit}_{speaker}_{index}.flac", rate)
                waves.append(fit_length(wave, samples, "center_crop", fill=fill))
                digits.append(digit)
                voices.append(voice)
    return torch.stack(waves), torch.tensor(digits), torch.tensor(voices)


def per_speaker_standardised(features: torch.Tensor, voices: torch.Tensor) -> torch.Tensor:
    """Each speaker's features minus that speaker's mean, over its std (no label used)."""
    out = torch.empty_like(features)
    for voice in voices.unique():
        rows = voices == voice
        out[rows] = (features[rows] - features[rows].mean(0)) / (features[rows].std(0) + 1e-6)
    return out


def probe_accuracy(encoder: Any, seed: int = 0) -> float:
    """A linear probe on the frozen encoder's embeddings: trained on the three training
    speakers' first 30 clips of each digit, scored on the unheard speaker's 500 clips.

    The embeddings are standardised per speaker first. The pretraining's speaker task teaches
    the encoder the voice, so the unheard speaker's embeddings sit apart from the three
    training voices; a probe on raw embeddings measured that offset more than the digits.
    """
    fed = encoder.frontend  # as the encoder is fed: rate, clip length, fill
    fit = (fed.sample_rate, fed.clip_samples, fed.fill)
    train_x, train_y, train_v = clips(TRAIN_SPEAKERS, 30, *fit)
    test_x, test_y, test_v = clips((HELDOUT,), 50, *fit)
    encoder.eval()
    with torch.no_grad():
        train_f = per_speaker_standardised(encoder(train_x).embedding, train_v)
        test_f = per_speaker_standardised(encoder(test_x).embedding, test_v)
    torch.manual_seed(seed)
    probe = torch.nn.Linear(train_f.shape[1], 10)
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(probe(train_f), train_y)
        optimizer.zero_grad()
        (loss + 1e-3 * probe.weight.pow(2).sum()).backward()
        optimizer.step()
    return float((probe(test_f).argmax(-1) == test_y).float().mean())


MARGIN = 0.10
"""The claim (chance is 0.10): the pretrained encoder's probe 10 points above the random one's.

Measured on theo (random -> pretrained): seed 0, 0.252 -> 0.446; seed 1, 0.236 -> 0.444 (0.446
with the recipe on 2 threads); the same with OMP_NUM_THREADS=1 and 2; seeds 2 and 3, 0.226 ->
0.514 and 0.252 -> 0.410. With the smoke LM trained along at GPT2's 0.02 init instead of frozen
at 0.2: 0.252 -> 0.296 (fails). Before the fix (LM trained, 60 updates, clips zero-padded, probe
on raw embeddings): 0.16 -> 0.14-0.24. The raw-embedding probe misses the digits: on seed 0's
encoder of this preset, 0.26 -> 0.27, while its LM answers theo's digits right 37% of the time."""


def test_probe_on_the_pretrained_encoder_beats_the_random_one(smoke: Path) -> None:
    texts = [t for r in read_multitask_manifest(smoke / "data" / "multitask_train.jsonl")
             for t in (r.prompt, r.answer)]  # fmt: skip
    set_seed(0)  # the recipe's seed before it builds the model: its very initial weights
    initial = build_prefix_model(SMOKE, texts).audio_encoder
    pretrained = load_audio_encoder(smoke / "best" / "audio_encoder.safetensors")
    random_accuracy, trained_accuracy = probe_accuracy(initial), probe_accuracy(pretrained)
    print(f"\nprobe on {HELDOUT}: random {random_accuracy:.3f}, pretrained {trained_accuracy:.3f}")
    assert trained_accuracy >= random_accuracy + MARGIN


# -- the encoder file's loaders ----------------------------------------------------------
def test_paper_size_encoder_file_loads_strictly_in_both_loaders(tmp_path: Path) -> None:
    """What ``best/audio_encoder.safetensors`` is at paper size: a headless HTSAT-22 (no loss
    reaches a classifier, and DDP refuses parameters without gradients) that
    ``htsat_22(num_classes=0, weights=...)`` and ``pretrain_clap.py --audio-weights``
    (``create_audio_tower("htsat-22", weights=...)``, what clapkit.train.demo.build_encoders
    calls) load strictly; a headed ``htsat_22`` is told to build without a head."""
    from transformers import GPT2Config, GPT2LMHeadModel

    lm = tmp_path / "lm"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=64)).save_pretrained(lm)
    cfg = dataclasses.replace(
        PAPER, language_model=str(lm), mapper_depth=1, mapper_heads=2,
        tokenizer=str(RECIPES.parent / "data" / "reference" / "tokenizers" / "gpt2"),
    )  # fmt: skip
    encoder = build_prefix_model(cfg, []).audio_encoder
    assert encoder.num_classes == 0
    assert not [name for name in encoder.state_dict() if name.startswith("head.")]
    with torch.no_grad():
        encoder.norm.weight.add_(1.0)  # a trained file differs from any fresh init
    path = tmp_path / "audio_encoder.safetensors"
    save_weights(encoder, path)  # what save_best writes
    for loaded in (
        htsat_22(num_classes=0, weights=path),
        create_audio_tower("htsat-22", weights=path),
    ):
        for name, tensor in encoder.state_dict().items():
            assert loaded.state_dict()[name].equal(tensor), name
    with pytest.raises(
        CheckpointError, match=r"head\.weight.*build the encoder with num_classes=0"
    ):
        htsat_22(weights=path)
    tensors = load_file(path)
    tensors.pop("norm.bias")
    save_file(tensors, str(tmp_path / "short.safetensors"))
    with pytest.raises(CheckpointError, match=r"norm\.bias"):
        htsat_22(num_classes=0, weights=tmp_path / "short.safetensors")


# -- resume and processes -----------------------------------------------------------------
def test_run_killed_mid_epoch_resumes_to_identical_weights(smoke: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    # the recipe itself, not `accelerate launch`: SIGKILL on the launcher would leave its child
    # training on (CPU only, as the launcher's runs)
    command = [sys.executable, str(RECIPES / "pretrain_htsat22.py"), *QUIET, "--output-dir",
               str(parts)]  # fmt: skip
    # step 180 is update 30 of epoch 2's 75: SIGKILL as soon as its checkpoint is complete
    kill_when(command, parts / "checkpoints" / "step_00000180", extra_env=LAUNCH_ENV)
    assert not (parts / "checkpoints" / "step_00000225_end").exists()
    kept = (parts / "checkpoints" / "step_00000120" / "COMPLETE").read_text()
    done = launch("pretrain_htsat22.py", *QUIET, "--output-dir", str(parts), "--resume", "latest")
    assert "step_00000180: epoch 2, step 180, batch 60 of the epoch" in done.stderr
    # it continued from step 180: a run started over would have rewritten step 120's checkpoint
    assert (parts / "checkpoints" / "step_00000120" / "COMPLETE").read_text() == kept
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


TEXTS = ["which digit", "which speaker", *DIGITS, "jackson", "nicolas", "yweweler"]


def test_tiny_model_trains_the_encoder_and_mapper_through_a_frozen_lm() -> None:
    torch.manual_seed(0)
    model = build_prefix_model(SMOKE, TEXTS)
    assert model.audio_encoder.architecture == "htsat"
    assert all(p.requires_grad for p in model.audio_encoder.parameters())
    assert all(p.requires_grad for p in model.mapper.parameters())
    assert not any(p.requires_grad for p in model.language_model.parameters())
    batch = model.tokenize_prompted(["which digit", "which speaker"], ["seven", "theo"])
    waveform = 0.1 * torch.randn(2, int(8000 * SMOKE.clip_seconds))
    out = model(waveform, **batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.prefix.shape == (2, SMOKE.prefix_length, 64)
    assert all(p.grad is not None for p in model.audio_encoder.parameters())


def test_tiny_model_front_end_and_random_lm_scale() -> None:
    torch.manual_seed(0)
    model = build_prefix_model(SMOKE, TEXTS)
    frontend = model.audio_encoder.frontend
    # 8 kHz speech, short words repeated to the clip (not zero-padded), a 20 ms hop
    assert (frontend.sample_rate, frontend.fill, frontend.hop_length) == (8000, "repeat", 160)
    assert model.audio_encoder.get_config()["spec_size"] == 40
    assert model.language_model.config.initializer_range == SMOKE.lm_init_std == 0.2
    words = model.language_model.get_input_embeddings().weight
    assert float(words.std()) == pytest.approx(0.2, rel=0.2)
    default = build_prefix_model(dataclasses.replace(SMOKE, lm_init_std=0.02), TEXTS)
    words = default.language_model.get_input_embeddings().weight
    assert float(words.std()) == pytest.approx(0.02, rel=0.2)


def test_tiny_model_with_the_cnn14_encoder() -> None:
    model = build_prefix_model(dataclasses.replace(SMOKE, audio="cnn14"), TEXTS)
    assert model.audio_encoder.architecture == "cnn14"
    assert model.audio_encoder.frontend == build_prefix_model(SMOKE, TEXTS).audio_encoder.frontend
    batch = model.tokenize_prompted(["which digit"], ["seven"])
    assert torch.isfinite(model(0.1 * torch.randn(1, 6400), **batch).loss)
