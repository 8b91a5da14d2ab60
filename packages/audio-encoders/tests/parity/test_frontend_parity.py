"""Log-mel front end vs torchlibrosa Spectrogram + LogmelFilterBank (PANNs, HTS-AT, msclap)."""

from __future__ import annotations

import pytest
import torch

from clapkit.audio import FrontendConfig, LogMelFrontend, check_mel_filterbank
from clapkit.audio.fast.common import ChunkedLogMel

from .conftest import FORMS, FRONTEND_TOLERANCE, clips, relative_error

pytestmark = pytest.mark.parity

CONFIGS = [
    FrontendConfig(sample_rate=32000),  # PANNs / HTS-AT
    FrontendConfig(sample_rate=44100),  # msclap 2022
    FrontendConfig(sample_rate=44100, filterbank_rate=32000),  # msclap 2023
    FrontendConfig(sample_rate=44100, fmax=8000.0),  # the 2023 paper
    FrontendConfig(sample_rate=48000, hop_length=480),  # LAION
]


def _torchlibrosa(config: FrontendConfig) -> torch.nn.Module:
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    spectrogram = Spectrogram(
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    log_mel = LogmelFilterBank(
        sr=config.mel_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
        ref=1.0,
        amin=1e-10,
        top_db=None,
        freeze_parameters=True,
    )
    return torch.nn.Sequential(spectrogram, log_mel)


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.sample_rate}-{c.mel_rate}-{c.fmax:g}"
)
def test_filterbank_equals_librosa(config: FrontendConfig) -> None:
    reference = _torchlibrosa(config)
    check_mel_filterbank(reference[1].melW, config)  # raises on a mismatch


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.sample_rate}-{c.mel_rate}-{c.fmax:g}"
)
@pytest.mark.parametrize("seconds", [5.0, 10.0])
@pytest.mark.parametrize("form", FORMS)
def test_log_mel_equals_torchlibrosa(config: FrontendConfig, seconds: float, form: str) -> None:
    """dB spectrogram, then the same (fresh: nearly identity) ``bn0`` on both sides."""
    wave = clips(config.sample_rate, seconds)
    frontend = LogMelFrontend(config).eval()
    with torch.no_grad():
        expected_db = _torchlibrosa(config)(wave)[:, 0]  # [b, f, m]
        expected = frontend.bn0(expected_db.transpose(1, 2)).transpose(1, 2)
        model = frontend if form == "plain" else ChunkedLogMel(frontend)
        ours = model(wave)[:, 0]
    assert (expected_db == -100.0).any()  # zero-padded speech reaches the dB floor
    assert relative_error(expected, ours) < FRONTEND_TOLERANCE
