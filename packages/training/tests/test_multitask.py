"""HTSAT-22 pretraining's pieces: presets, task weights, the FSDD multi-task data, the model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from clapkit.data import read_multitask_manifest
from clapkit.train.demo import DIGITS
from clapkit.train.multitask import build_model, fsdd_multitask_manifests
from clapkit.train.presets.htsat22 import (
    NOTES,
    PENGI22,
    PENGI_22,
    SMOKE,
    Config,
    htsat22_presets,
    parse_weights,
)

FSDD = Path(__file__).resolve().parents[3] / "data" / "fsdd"
TEXTS = ["which digit", "which speaker", *DIGITS, "jackson", "nicolas", "yweweler"]


def test_presets_the_paper_and_the_smoke() -> None:
    presets = htsat22_presets(fsdd_root="somewhere/fsdd")
    assert set(presets) == set(NOTES) == {"pengi-22", "smoke"}
    assert presets["pengi-22"] == PENGI22 == Config(output_dir="runs/htsat22")
    assert (PENGI22.freeze_language_model, PENGI22.mapper, PENGI22.prefix_length) == (
        True, "transformer", 40,
    )  # fmt: skip
    smoke = presets["smoke"]
    assert smoke == dataclasses.replace(SMOKE, fsdd_root="somewhere/fsdd")
    assert (smoke.size, smoke.mixed_precision, smoke.num_workers) == ("tiny", "auto", 0)
    assert len({name for name, *_ in PENGI_22}) == len(PENGI_22) == 22


def test_parse_weights() -> None:
    assert parse_weights(()) is None
    assert parse_weights(("esc50=1", "clotho=2.5")) == {"esc50": 1.0, "clotho": 2.5}
    with pytest.raises(SystemExit, match="'clotho:2' is not NAME=NUMBER"):
        parse_weights(("esc50=1", "clotho:2"))


def test_fsdd_multitask_manifests(tmp_path: Path) -> None:
    train, heldout = fsdd_multitask_manifests(FSDD, tmp_path, "theo", clips_per_digit=2)
    pairs, test = read_multitask_manifest(train), read_multitask_manifest(heldout)
    digit = [r for r in pairs if r.task == "digit"]
    speaker = [r for r in pairs if r.task == "speaker"]
    assert len(digit) == len(speaker) == 3 * 10 * 2  # three speakers, ten digits, two takes
    assert {r.prompt for r in digit} == {r.prompt for r in test} == {"which digit"}
    assert {r.prompt for r in speaker} == {"which speaker"}
    assert {r.answer for r in digit} == {r.answer for r in test} == set(DIGITS)
    assert {r.answer for r in speaker} == {"jackson", "nicolas", "yweweler"}
    assert len(test) == 20
    assert all(Path(r.audio).stem.split("_")[1] == "theo" for r in test)
    assert all(Path(r.audio).stem.split("_")[1] == r.answer for r in speaker)


def test_tiny_model_trains_the_encoder_and_mapper_through_a_frozen_lm() -> None:
    torch.manual_seed(0)
    model = build_model(SMOKE, TEXTS)
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
    model = build_model(SMOKE, TEXTS)
    frontend = model.audio_encoder.frontend
    # 8 kHz speech, short words repeated to the clip (not zero-padded), a 20 ms hop
    assert (frontend.sample_rate, frontend.fill, frontend.hop_length) == (8000, "repeat", 160)
    assert model.audio_encoder.get_config()["spec_size"] == 40
    assert model.language_model.config.initializer_range == SMOKE.lm_init_std == 0.2
    words = model.language_model.get_input_embeddings().weight
    assert float(words.std()) == pytest.approx(0.2, rel=0.2)
    default = build_model(dataclasses.replace(SMOKE, lm_init_std=0.02), TEXTS)
    words = default.language_model.get_input_embeddings().weight
    assert float(words.std()) == pytest.approx(0.02, rel=0.2)


def test_tiny_model_with_the_cnn14_encoder() -> None:
    model = build_model(dataclasses.replace(SMOKE, audio="cnn14"), TEXTS)
    assert model.audio_encoder.architecture == "cnn14"
    assert model.audio_encoder.frontend == build_model(SMOKE, TEXTS).audio_encoder.frontend
    batch = model.tokenize_prompted(["which digit"], ["seven"])
    assert torch.isfinite(model(0.1 * torch.randn(1, 6400), **batch).loss)
