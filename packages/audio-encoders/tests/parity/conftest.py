"""Helpers for parity against the reference implementations (imported inside fixtures only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from clapkit.audio import fit_length, load_audio

FSDD = Path(__file__).resolve().parents[4] / "data" / "fsdd" / "recordings"
TOLERANCE = 1e-4
"""Largest allowed |reference - clapkit|, relative to the largest |reference| value."""


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
    return float((reference.double() - ours.double()).abs().max() / reference.abs().max())


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
