"""HTSAT vs HTS-AT (msclap's copy of the HTS-AT model) and msclap 2023's audio encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clapkit.audio import AudioEncoderOutput, htsat, htsat_msclap_2023

from .conftest import TOLERANCE, clips, randomise, relative_error

pytestmark = pytest.mark.parity


def _compare(expected: dict[str, torch.Tensor], ours: AudioEncoderOutput) -> None:
    assert ours.clipwise_probs is not None
    assert ours.framewise_logits is not None
    assert relative_error(expected["latent_output"], ours.embedding) < TOLERANCE
    assert relative_error(expected["clipwise_output"], ours.clipwise_probs) < TOLERANCE
    # HTS-AT repeats each of its 32 output frames 32 times over the 1024-frame image.
    frames = torch.sigmoid(ours.framewise_logits).repeat_interleave(32, dim=1)
    assert relative_error(expected["framewise_output"], frames) < TOLERANCE


@pytest.fixture(scope="module")
def htsat_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    from msclap.models import config
    from msclap.models.htsat import HTSAT_Swin_Transformer

    torch.manual_seed(0)
    reference = HTSAT_Swin_Transformer(config=config)  # HTS-AT tiny, AudioSet settings
    randomise(reference)
    state = {f"sed_model.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path_factory.mktemp("htsat") / "HTSAT_AudioSet_Saved_1.ckpt"
    torch.save({"epoch": 1, "global_step": 10, "state_dict": state}, path)
    return reference.eval(), path


@pytest.mark.parametrize("seconds", [5.0, 10.0, 12.0])  # 501, 1001 (stretched), 1201 (windows)
def test_htsat_audioset(htsat_checkpoint: tuple[torch.nn.Module, Path], seconds: float) -> None:
    reference, path = htsat_checkpoint
    encoder = htsat(weights=path).eval()
    wave = clips(32000, seconds)
    with torch.no_grad():
        expected = reference(wave)
        ours = encoder(wave)
    _compare(expected, ours)


@pytest.fixture(scope="module")
def msclap_2023_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    from msclap.models.clap import AudioEncoder

    torch.manual_seed(3)
    # The yml values (44.1 kHz, 50-8000 Hz) reach HTSATWrapper but are ignored by it.
    reference = AudioEncoder(
        "HTSAT",
        768,
        1024,
        sample_rate=44100,
        window_size=1024,
        hop_size=320,
        mel_bins=64,
        fmin=50,
        fmax=8000,
        classes_num=527,
    )
    randomise(reference, seed=4)
    state = {f"audio_encoder.{k}": v for k, v in reference.state_dict().items()}
    state["logit_scale"] = torch.tensor(2.0)
    path = tmp_path_factory.mktemp("msclap") / "CLAP_weights_2023.pth"
    torch.save({"model": state}, path)
    return reference.eval(), path


@pytest.mark.parametrize("seconds", [5.0, 7.0, 10.0])  # 690, 965 and 1379 frames at 44.1 kHz
def test_msclap_2023_audio_encoder(
    msclap_2023_file: tuple[torch.nn.Module, Path], seconds: float
) -> None:
    reference, path = msclap_2023_file
    encoder = htsat_msclap_2023(weights=path).eval()
    wave = clips(44100, seconds)
    with torch.no_grad():
        expected = reference.base(wave)
        ours = encoder(wave)
    _compare(expected, ours)
