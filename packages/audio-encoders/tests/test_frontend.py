"""FrontendConfig, the Slaney filterbank and the log-mel front end against independent maths."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from clapkit.audio import FrontendConfig, LogMelFrontend, fit_length, load_audio, mel_filterbank


def test_config_round_trip_and_derived_sizes() -> None:
    config = FrontendConfig(sample_rate=44100, filterbank_rate=32000, clip_seconds=7.0)
    assert FrontendConfig.from_dict(config.to_dict()) == config
    assert config.clip_samples == 308700
    assert config.clip_frames == 965  # what msclap 2023 stretches to 1024
    assert config.mel_rate == 32000
    assert FrontendConfig(sample_rate=32000).clip_frames == 1001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 16000, "fmax": 9000.0}, "fmax"),
        ({"sample_rate": 16000, "fmin": 500.0, "fmax": 400.0}, "fmin"),
        ({"sample_rate": 16000, "win_length": 2048}, "win_length"),
        ({"sample_rate": 16000, "fmax": 8000.0, "fill": "loop"}, "fill"),
        ({"sample_rate": 16000, "fmax": 8000.0, "clip_seconds": 0.0}, "clip_seconds"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrontendConfig(**kwargs)


def test_from_dict_rejects_unknown_field() -> None:
    with pytest.raises(ValueError, match="hop"):
        FrontendConfig.from_dict({"sample_rate": 16000, "hop": 160})


def _slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    linear = hz / (200.0 / 3)
    log = 15.0 + torch.log(hz.clamp(min=1e-9) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(hz >= 1000.0, log, linear)


def _slaney_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * (200.0 / 3)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mel - 15.0))
    return torch.where(mel >= 15.0, log, linear)


def _reference_filterbank(config: FrontendConfig) -> torch.Tensor:
    """Triangles on the Slaney mel scale, area-normalised (librosa ``norm='slaney'``)."""
    n_freqs = config.n_fft // 2 + 1
    freqs = torch.linspace(0, config.mel_rate / 2, n_freqs, dtype=torch.float64)
    lo, hi = _slaney_mel(torch.tensor([config.fmin, config.fmax], dtype=torch.float64))
    edges = _slaney_hz(torch.linspace(float(lo), float(hi), config.n_mels + 2, dtype=torch.float64))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - left) / (centre - left)
    falling = (right - freqs) / (right - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0) * (2.0 / (right - left))
    return weights.T  # [n_freqs, n_mels]


@pytest.mark.parametrize(
    "config",
    [
        FrontendConfig(sample_rate=32000),
        FrontendConfig(sample_rate=44100, fmax=8000.0),
        FrontendConfig(sample_rate=44100, filterbank_rate=32000),
        FrontendConfig(sample_rate=48000, hop_length=480, fmin=0.0, fmax=24000.0),
    ],
)
def test_filterbank_is_slaney(config: FrontendConfig) -> None:
    ours = mel_filterbank(config).double()
    expected = _reference_filterbank(config)
    assert ours.shape == (config.n_fft // 2 + 1, config.n_mels)
    assert (ours - expected).abs().max() <= 1e-5 * expected.abs().max()  # float32 design


def _naive_log_mel(wave: torch.Tensor, config: FrontendConfig) -> torch.Tensor:
    """Explicit float64 DFT of reflect-padded Hann frames, power, mel, dB: ``[b, n_mels, f]``."""
    half = config.n_fft // 2
    padded = torch.nn.functional.pad(wave.double()[:, None], (half, half), mode="reflect")[:, 0]
    frames = padded.unfold(-1, config.n_fft, config.hop_length)  # [b, f, n_fft]
    n = torch.arange(config.n_fft, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / config.win_length)  # periodic Hann
    k = torch.arange(half + 1, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * n / config.n_fft
    real = (frames * window) @ torch.cos(angle).T
    imag = (frames * window) @ torch.sin(angle).T
    mel = (real.square() + imag.square()) @ _reference_filterbank(config)
    return (10 * torch.log10(mel.clamp(min=1e-10))).transpose(1, 2)


@pytest.mark.parametrize("rate", [32000, 44100])
def test_log_mel_matches_explicit_dft_on_real_audio(rate: int, fsdd_files: list[Path]) -> None:
    config = FrontendConfig(sample_rate=rate, clip_seconds=1.0)
    clips = [fit_length(load_audio(f, rate), config.clip_samples, "pad") for f in fsdd_files[:2]]
    wave = torch.stack(
        [*clips, 0.1 * torch.randn(config.clip_samples, generator=torch.Generator().manual_seed(0))]
    )
    ours = LogMelFrontend(config).log_mel(wave)
    expected = _naive_log_mel(wave, config)
    assert ours.dtype == torch.float32
    assert ours.shape == (3, 64, config.clip_frames)
    assert (ours.double() - expected).abs().max() < 1e-3  # dB, silent bins included
    assert ours.min() == -100.0  # zero padding reaches the 1e-10 floor


FP32_MAX_DB_ERROR = 0.05
"""float32 vs float64 log-mel on 20 FSDD clips at 44.1 kHz, every bin (measured: 0.018 dB, in
near-silent bins); within 80 dB of each clip's peak the measured error is 0.0005 dB."""


def test_float32_log_mel_within_stated_error_and_used_under_autocast() -> None:
    files = sorted((Path(__file__).resolve().parents[3] / "data/fsdd/recordings").glob("*.flac"))
    config = FrontendConfig(sample_rate=44100, fmin=50.0, fmax=8000.0, clip_seconds=7.0)
    frontend = LogMelFrontend(config).eval()
    worst = loud = 0.0
    for file in files[::100]:
        wave = load_audio(file, 44100)[None]
        exact, single = frontend.log_mel(wave), frontend.log_mel(wave, float32=True)
        error = (exact - single).abs()
        worst = max(worst, float(error.max()))
        loud = max(loud, float(error[exact > exact.max() - 80].max()))
    assert len(files[::100]) == 20
    assert 0 < worst < FP32_MAX_DB_ERROR
    assert loud < 2e-3
    wave = load_audio(files[0], 44100)[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = frontend(wave)
    expected = frontend.bn0(frontend.log_mel(wave, float32=True)).transpose(1, 2).unsqueeze(1)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, expected, rtol=0, atol=0)
    assert not torch.equal(frontend(wave), mixed)  # without autocast: the float64 path


def test_bn0_normalises_each_mel_bin() -> None:
    config = FrontendConfig(sample_rate=16000, fmax=8000.0, n_mels=8, clip_seconds=0.5)
    frontend = LogMelFrontend(config).eval()
    with torch.no_grad():
        frontend.bn0.running_mean.uniform_(-50, 0)
        frontend.bn0.running_var.uniform_(1, 100)
        frontend.bn0.weight.uniform_(0.5, 2)
        frontend.bn0.bias.uniform_(-1, 1)
    wave = torch.randn(2, config.clip_samples)
    features = frontend(wave)
    raw = frontend.log_mel(wave).transpose(1, 2)  # [b, f, m]
    bn = frontend.bn0
    expected = (raw - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert features.shape == (2, 1, config.clip_frames, 8)
    torch.testing.assert_close(features[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_spec_augment_only_in_training_and_seedable() -> None:
    config = FrontendConfig(sample_rate=16000, fmax=8000.0, clip_seconds=4.0)
    frontend = LogMelFrontend(config)
    with torch.no_grad():
        frontend.bn0.bias.fill_(5.0)  # keep features away from 0 so stripes are visible
    wave = torch.randn(4, config.clip_samples)
    frontend.eval()
    clean = frontend(wave)
    assert (clean != 0).all()
    frontend.train()
    frontend.generator = torch.Generator().manual_seed(7)
    first = frontend(wave)
    frontend.generator = torch.Generator().manual_seed(7)
    second = frontend(wave)
    torch.testing.assert_close(first, second)
    frontend.generator = torch.Generator().manual_seed(8)
    assert not torch.equal(first, frontend(wave))
    for clip in first[:, 0]:
        zero_frames = (clip == 0).all(dim=1).sum().item()
        zero_mels = (clip == 0).all(dim=0).sum().item()
        assert zero_frames <= 2 * 63  # two stripes of width < 64
        assert zero_mels <= 2 * 7  # two stripes of width < 8
    dropped = (first == 0).sum().item()
    assert dropped > 0


def test_spec_augment_can_be_disabled() -> None:
    config = FrontendConfig(sample_rate=16000, fmax=8000.0, clip_seconds=1.0)
    frontend = LogMelFrontend(config, spec_augment=False).train()
    with torch.no_grad():
        frontend.bn0.bias.fill_(5.0)
    assert (frontend(torch.randn(2, config.clip_samples)) != 0).all()


def test_rejects_bad_waveforms() -> None:
    frontend = LogMelFrontend(FrontendConfig(sample_rate=16000, fmax=8000.0))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        frontend(torch.randn(16000))
    with pytest.raises(ValueError, match="fit_length"):
        frontend(torch.randn(1, 100))


def test_half_precision_module_keeps_float64_dsp() -> None:
    config = FrontendConfig(sample_rate=16000, fmax=8000.0, clip_seconds=1.0)
    frontend = LogMelFrontend(config).eval()
    wave = torch.randn(1, config.clip_samples)
    reference = frontend.log_mel(wave)
    frontend.to(torch.bfloat16)
    torch.testing.assert_close(frontend.log_mel(wave), reference)
    assert frontend(wave).dtype == torch.bfloat16
