"""Every named encoder at tiny size: forward, backward, checkpointing, round trips, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clapkit.audio import (
    HTSAT,
    NAMED_ENCODERS,
    AudioEncoder,
    build_audio_encoder,
    load_audio_encoder,
    save_weights,
)

from .conftest import tiny

NAMES = sorted(NAMED_ENCODERS)
LONGER_THAN_TINY_IMAGE = 3.0
"""Seconds whose frames exceed the 256-frame image of the tiny HTSAT (random-crop path)."""


def _wave(encoder: AudioEncoder, seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    samples = round(encoder.frontend.sample_rate * seconds)
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _randomise_norms(encoder: AudioEncoder) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                assert module.running_mean is not None
                assert module.running_var is not None
                module.running_mean.normal_(0.0, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                if module is encoder.log_mel.bn0:
                    module.running_mean.add_(-40.0)
                    module.running_var.mul_(100.0)


@pytest.fixture(params=NAMES)
def encoder(request: pytest.FixtureRequest) -> AudioEncoder:
    torch.manual_seed(0)
    model = tiny(request.param)
    _randomise_norms(model)
    return model.eval()


@pytest.mark.parametrize("seconds", [0.6, None])
def test_forward_shapes_and_finite(encoder: AudioEncoder, seconds: float | None) -> None:
    duration = seconds if seconds is not None else encoder.frontend.clip_seconds
    with torch.inference_mode():
        out = encoder(_wave(encoder, duration))
    assert out.embedding.shape == (2, encoder.out_dim)
    assert out.clipwise_logits is not None
    assert out.clipwise_logits.shape == (2, 5)
    assert torch.isfinite(out.embedding).all()
    assert torch.isfinite(out.clipwise_logits).all()
    if isinstance(encoder, HTSAT):
        assert out.framewise_logits is not None
        assert out.framewise_logits.shape == (2, 4 * encoder.final_grid // 2, 5)
        assert torch.isfinite(out.framewise_logits).all()
    else:
        assert out.framewise_logits is None


def test_silence_gives_finite_outputs(encoder: AudioEncoder) -> None:
    with torch.inference_mode():
        out = encoder(torch.zeros(1, encoder.frontend.sample_rate))
    assert torch.isfinite(out.embedding).all()


def test_batch_items_are_independent_in_eval(encoder: AudioEncoder) -> None:
    wave = _wave(encoder, 0.8, batch=3)
    with torch.inference_mode():
        together = encoder(wave).embedding
        alone = torch.cat([encoder(w[None]).embedding for w in wave])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_backward_reaches_every_parameter(encoder: AudioEncoder) -> None:
    encoder.train()
    encoder.set_generator(torch.Generator().manual_seed(0))
    out = encoder(_wave(encoder, LONGER_THAN_TINY_IMAGE))
    assert out.clipwise_logits is not None
    (out.embedding.square().mean() + out.clipwise_logits.mean()).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def _train_step(
    encoder: AudioEncoder, wave: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    encoder.zero_grad()
    torch.manual_seed(123)  # dropout / drop path
    encoder.set_generator(torch.Generator().manual_seed(5))  # SpecAugment, crops
    out = encoder(wave)
    assert out.clipwise_logits is not None
    loss = out.embedding.square().mean() + out.clipwise_logits.sigmoid().mean()
    loss.backward()
    grads = [p.grad.clone() for p in encoder.parameters() if p.grad is not None]
    return out.embedding.detach(), grads


def test_grad_checkpointing_is_equivalent(encoder: AudioEncoder) -> None:
    encoder.train()
    wave = _wave(encoder, 1.2)
    plain, plain_grads = _train_step(encoder, wave)
    encoder.set_grad_checkpointing(True)
    checked, checked_grads = _train_step(encoder, wave)
    encoder.set_grad_checkpointing(False)
    torch.testing.assert_close(checked, plain)
    assert len(checked_grads) == len(plain_grads)
    for a, b in zip(checked_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_training_randomness_is_seedable(encoder: AudioEncoder) -> None:
    encoder.train()
    wave = _wave(encoder, LONGER_THAN_TINY_IMAGE)
    first, _ = _train_step(encoder, wave)
    second, _ = _train_step(encoder, wave)
    torch.testing.assert_close(first, second)


def test_save_load_round_trip(encoder: AudioEncoder, tmp_path: Path) -> None:
    path = tmp_path / "encoder.safetensors"
    save_weights(encoder, path)
    loaded = load_audio_encoder(path)
    assert type(loaded) is type(encoder)
    assert loaded.get_config() == encoder.get_config()
    wave = _wave(encoder, 0.7)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(wave).embedding, encoder(wave).embedding)


def test_config_is_json_and_rebuilds_identical_structure(encoder: AudioEncoder) -> None:
    config = json.loads(json.dumps(encoder.get_config()))
    assert config["architecture"] == encoder.architecture
    assert config["frontend"] == encoder.frontend.to_dict()
    rebuilt = build_audio_encoder(config)
    assert rebuilt.get_config() == encoder.get_config()
    assert rebuilt.frontend == encoder.frontend
    ours = {k: v.shape for k, v in encoder.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == ours
    rebuilt.load_state_dict(encoder.state_dict())
    wave = _wave(encoder, 0.7)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.eval()(wave).embedding, encoder(wave).embedding)


def test_reset_classifier(encoder: AudioEncoder) -> None:
    wave = _wave(encoder, 0.6, batch=1)
    encoder.reset_classifier(3)
    with torch.inference_mode():
        out = encoder(wave)
    assert out.clipwise_logits is not None
    assert out.clipwise_logits.shape == (1, 3)
    assert encoder.get_config()["num_classes"] == 3
    encoder.reset_classifier(0)
    with torch.inference_mode():
        out = encoder(wave)
    assert out.clipwise_logits is None
    assert out.framewise_logits is None
    assert out.embedding.shape == (1, encoder.out_dim)
    assert not any(k.startswith("head.") for k in encoder.state_dict())
    with pytest.raises(ValueError, match="num_classes"):
        encoder.reset_classifier(-1)


def test_rejects_bad_input(encoder: AudioEncoder) -> None:
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        encoder(torch.zeros(encoder.frontend.sample_rate))
    with pytest.raises(ValueError, match="floating point"):
        encoder(torch.zeros(1, encoder.frontend.sample_rate, dtype=torch.int16))
    with pytest.raises(ValueError, match="fit_length"):
        encoder(torch.zeros(1, 100))


def test_bfloat16_autocast_runs(encoder: AudioEncoder) -> None:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(_wave(encoder, 0.6))
    assert torch.isfinite(out.embedding.float()).all()


def test_htsat_long_input_averages_windows() -> None:
    torch.manual_seed(0)
    encoder = tiny("htsat").eval()
    assert isinstance(encoder, HTSAT)
    wave = _wave(encoder, 1.0)  # 101 frames at 32 kHz, hop 320 ...
    encoder_frames = wave.shape[1] // encoder.frontend.hop_length + 1
    assert encoder_frames < encoder.image_frames  # ... stretched to 256
    long_wave = _wave(encoder, 4.0)  # 401 frames: windows of 172 frames every 86
    frames = long_wave.shape[1] // encoder.frontend.hop_length + 1
    starts = list(range(0, frames - encoder.long_crop_frames - 1, encoder.long_crop_hop))
    with torch.inference_mode():
        features = encoder.forward_features(long_wave)
        out = encoder.forward_head(features)
        per_window = [encoder.forward_head(features[:, i : i + 1]) for i in range(len(starts))]
    assert encoder.long_crop_frames == 256 * 689 // 1024
    assert features.shape[1] == len(starts) == 3
    torch.testing.assert_close(
        out.embedding, torch.stack([o.embedding for o in per_window]).mean(0)
    )
    probs = torch.stack([o.clipwise_probs for o in per_window if o.clipwise_probs is not None])
    assert out.clipwise_probs is not None
    torch.testing.assert_close(out.clipwise_probs, probs.mean(0))
    encoder.train()
    encoder.set_generator(torch.Generator().manual_seed(0))
    assert encoder.forward_features(long_wave).shape[1] == 1  # one random crop in training


def test_named_encoders_is_the_agreed_table() -> None:
    assert set(NAMED_ENCODERS) == {
        "cnn14", "htsat", "htsat-22", "cnn14-msclap-2022", "htsat-msclap-2023",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_every_named_encoder_builds_at_full_size_and_runs(name: str) -> None:
    torch.manual_seed(0)
    encoder = NAMED_ENCODERS[name]().eval()
    wave = 0.1 * torch.randn(1, encoder.frontend.sample_rate // 2)
    with torch.inference_mode():
        out = encoder(wave)
    assert out.embedding.shape == (1, encoder.out_dim)
    assert out.clipwise_logits is not None
    assert out.clipwise_logits.shape == (1, 527)
    assert torch.isfinite(out.embedding).all()
    assert build_audio_encoder({"architecture": name}).get_config() == encoder.get_config()
