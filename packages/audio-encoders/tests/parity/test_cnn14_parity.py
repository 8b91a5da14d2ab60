"""CNN14 vs panns_inference and msclap 2022's audio encoder, loaded from files in their formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clapkit.audio import cnn14, cnn14_msclap_2022

from .conftest import FORMS, TOLERANCE, clips, msclap_audio_file, randomise, relative_error, run

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def panns_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    from panns_inference.models import Cnn14

    torch.manual_seed(0)
    reference = Cnn14(
        sample_rate=32000,
        window_size=1024,
        hop_size=320,
        mel_bins=64,
        fmin=50,
        fmax=14000,
        classes_num=527,
    )
    randomise(reference)
    path = tmp_path_factory.mktemp("panns") / "Cnn14_mAP=0.431.pth"
    torch.save({"model": reference.state_dict(), "iteration": 0, "sampler": {}}, path)
    return reference.eval(), path


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seconds", [5.0, 10.0])
def test_panns_cnn14(panns_file: tuple[torch.nn.Module, Path], seconds: float, form: str) -> None:
    reference, path = panns_file
    encoder = cnn14(weights=path).eval()
    wave = clips(32000, seconds)
    with torch.no_grad():
        expected = reference(wave)
    ours = run(encoder, wave, form)
    assert ours.clipwise_probs is not None
    assert relative_error(expected["embedding"], ours.embedding) < TOLERANCE
    assert relative_error(expected["clipwise_output"], ours.clipwise_probs) < TOLERANCE


@pytest.fixture(scope="module")
def msclap_2022_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    return msclap_audio_file(
        tmp_path_factory.mktemp("msclap"),
        "Cnn14",
        out_emb=2048,
        fmax=14000,
        seed=1,
        extra={"caption_encoder.projection.linear1.weight": torch.zeros(1024, 768)},
    )


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seconds", [5.0, 10.0])
def test_msclap_2022_audio_encoder(
    msclap_2022_file: tuple[torch.nn.Module, Path], seconds: float, form: str
) -> None:
    reference, path = msclap_2022_file
    encoder = cnn14_msclap_2022(weights=path).eval()
    wave = clips(44100, seconds)
    with torch.no_grad():
        expected = reference.base(wave)
    ours = run(encoder, wave, form)
    assert ours.clipwise_probs is not None
    assert relative_error(expected["embedding"], ours.embedding) < TOLERANCE
    assert relative_error(expected["clipwise_output"], ours.clipwise_probs) < TOLERANCE
