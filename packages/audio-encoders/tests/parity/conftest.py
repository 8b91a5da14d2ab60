"""Helpers for parity against the reference implementations (imported inside fixtures only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from clapkit.audio import AudioEncoder, AudioEncoderOutput, fit_length, inference_form, load_audio

FSDD = Path(__file__).resolve().parents[4] / "data" / "fsdd" / "recordings"
TOLERANCE = 1e-5
"""Largest allowed |reference - clapkit| of a model output, relative to the largest |reference|
value (measured: a few 1e-7 on both paths, float32 rounding)."""
FRONTEND_TOLERANCE = 1e-4
"""The same for the log-mel front end in dB: the reference's float32 DFT convolution leaves a
noise floor near -100 dB that clapkit's float64 STFT does not have (measured: up to ~5e-5)."""
FORMS = ("plain", "fast")
"""How clapkit runs: the encoder itself (the path training and GPUs take) or its
:func:`~clapkit.audio.inference_form`."""
MEASURED: list[tuple[str, float]] = []
"""Every relative error measured in this session, printed at its end."""


def run(encoder: AudioEncoder, wave: Tensor, form: str) -> AudioEncoderOutput:
    """``encoder(wave)`` in evaluation without autograd, plain or through its fast form."""
    encoder.eval()
    model = encoder if form == "plain" else inference_form(encoder)
    assert (model is encoder) == (form == "plain")
    with torch.no_grad():
        out = model(wave)
    assert isinstance(out, AudioEncoderOutput)
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the largest relative error of each parity test."""
    if not MEASURED:
        return
    largest: dict[str, float] = {}
    for test, error in MEASURED:
        largest[test] = max(largest.get(test, 0.0), error)
    terminalreporter.section("parity: largest relative error per test")
    for test, error in largest.items():
        terminalreporter.write_line(f"{error:9.2e}  {test}")


def randomise(module: nn.Module, seed: int = 1) -> None:
    """Make every learned tensor and BatchNorm statistic non-trivial (reference init leaves
    norms at 1/0, running stats at 0/1 and position biases near 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, sub in module.named_modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                assert sub.running_mean is not None
                assert sub.running_var is not None
                sub.weight.uniform_(0.5, 1.5, generator=generator)
                sub.bias.normal_(0.0, 0.2, generator=generator)
                sub.running_mean.normal_(0.0, 0.5, generator=generator)
                sub.running_var.uniform_(0.5, 2.0, generator=generator)
                if name.endswith("bn0"):  # log-mel is in dB: centre and scale it like training
                    sub.running_mean.add_(-40.0)
                    sub.running_var.mul_(200.0)
            elif isinstance(sub, nn.LayerNorm):
                sub.weight.uniform_(0.5, 1.5, generator=generator)
                sub.bias.normal_(0.0, 0.2, generator=generator)
        for name, parameter in module.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.normal_(0.0, 1.0, generator=generator)


def relative_error(reference: Tensor, ours: Tensor) -> float:
    """``max |reference - ours| / max |reference|``."""
    assert reference.shape == ours.shape, (reference.shape, ours.shape)
    error = float((reference.double() - ours.double()).abs().max() / reference.abs().max())
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
    MEASURED.append((test, error))
    return error


def clips(sample_rate: int, seconds: float, count: int = 2) -> Tensor:
    """Real FSDD recordings resampled to ``sample_rate`` (one tiled, one zero-padded to
    ``seconds``) and a clip of noise: ``[count + 1, samples]``."""
    samples = round(sample_rate * seconds)
    files = sorted(FSDD.glob("*.flac"))[7::331][:count]
    if len(files) < count:
        pytest.fail(f"FSDD recordings missing under {FSDD}")
    waves = [
        fit_length(load_audio(path, sample_rate), samples, "repeat" if i % 2 == 0 else "pad")
        for i, path in enumerate(files)
    ]
    noise = 0.1 * torch.randn(samples, generator=torch.Generator().manual_seed(int(seconds * 1000)))
    return torch.stack([*waves, noise])


def msclap_audio_file(
    folder: Path,
    architecture: str,
    *,
    out_emb: int,
    fmax: float,
    seed: int,
    extra: dict[str, Tensor] | None = None,
) -> tuple[nn.Module, Path]:
    """An msclap ``AudioEncoder`` with random weights, saved as an msclap ``{"model": ...}`` file.

    Args:
        folder: Where to write ``CLAP_weights.pth``.
        architecture: ``"Cnn14"`` (2022) or ``"HTSAT"`` (2023).
        out_emb: Audio embedding width (2048 / 768).
        fmax: The yml's ``fmax`` (msclap's HTSAT wrapper ignores it).
        seed: Seeds the construction; ``seed + 1`` randomises norms and statistics.
        extra: More tensors for the file (other parts of a CLAP checkpoint).

    Returns:
        ``(reference in eval mode, path)``.
    """
    from msclap.models.clap import AudioEncoder

    torch.manual_seed(seed)
    reference = AudioEncoder(
        architecture,
        out_emb,
        1024,
        sample_rate=44100,
        window_size=1024,
        hop_size=320,
        mel_bins=64,
        fmin=50,
        fmax=fmax,
        classes_num=527,
    )
    randomise(reference, seed=seed + 1)
    state = {f"audio_encoder.{k}": v for k, v in reference.state_dict().items()}
    state["logit_scale"] = torch.tensor(2.0)
    state.update(extra or {})
    path = folder / "CLAP_weights.pth"
    torch.save({"model": state}, path)
    return reference.eval(), path
