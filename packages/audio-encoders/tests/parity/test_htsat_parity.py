"""HTSAT vs HTS-AT (msclap's copy of the HTS-AT model) and msclap 2023's audio encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clapkit.audio import AudioEncoderOutput, htsat, htsat_msclap_2023

from .conftest import FORMS, TOLERANCE, clips, msclap_audio_file, randomise, relative_error, run

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


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seconds", [5.0, 10.0, 12.0])  # 501, 1001 (stretched), 1201 (windows)
def test_htsat_audioset(
    htsat_checkpoint: tuple[torch.nn.Module, Path], seconds: float, form: str
) -> None:
    reference, path = htsat_checkpoint
    encoder = htsat(weights=path).eval()
    wave = clips(32000, seconds)
    with torch.no_grad():
        expected = reference(wave)
    ours = run(encoder, wave, form)
    _compare(expected, ours)


@pytest.fixture(scope="module")
def msclap_2023_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    # The yml values (44.1 kHz, 50-8000 Hz) reach HTSATWrapper but are ignored by it.
    return msclap_audio_file(
        tmp_path_factory.mktemp("msclap"), "HTSAT", out_emb=768, fmax=8000, seed=3
    )


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seconds", [5.0, 7.0, 10.0])  # 690, 965 and 1379 frames at 44.1 kHz
def test_msclap_2023_audio_encoder(
    msclap_2023_file: tuple[torch.nn.Module, Path], seconds: float, form: str
) -> None:
    reference, path = msclap_2023_file
    encoder = htsat_msclap_2023(weights=path).eval()
    wave = clips(44100, seconds)
    with torch.no_grad():
        expected = reference.base(wave)
    ours = run(encoder, wave, form)
    _compare(expected, ours)
