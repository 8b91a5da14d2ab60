"""Sample-rate conversion with kernels cached per rate pair, and the source frames a crop needs.

``torchaudio.functional.resample`` designs its windowed-sinc kernel on every call (25 ms of a
10 s clip from 16 kHz is spent there); :func:`resample` keeps one ``torchaudio.transforms.Resample``
per ``(source rate, target rate)`` in each process (so in each DataLoader worker) and gives the
same samples, bit for bit, for float32 audio.

A crop of ``n`` samples at the target rate depends on a few source frames around it only;
:func:`source_window` says which, so a decoder can read just those and still return exactly the
samples that resampling the whole file and cropping would give.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torchaudio.transforms import Resample

__all__ = ["resample", "resampled_length", "resampler", "source_window"]


@functools.lru_cache(maxsize=32)
def resampler(source_rate: int, target_rate: int) -> Resample:
    """The cached resampling transform of one rate pair (its kernel is designed once).

    The kernel is designed in float32, as ``torchaudio.functional.resample`` does for float32
    audio, so both give identical samples.

    Args:
        source_rate: Rate of the audio given (Hz).
        target_rate: Rate wanted (Hz).

    Returns:
        A ``torchaudio.transforms.Resample`` shared by every caller in this process.
    """
    return Resample(source_rate, target_rate, dtype=torch.float32)


def resample(wave: Tensor, source_rate: int, target_rate: int) -> Tensor:
    """Resample float32 audio with the cached kernel of its rate pair.

    Args:
        wave: ``[..., t]`` float32 waveform(s) at ``source_rate``.
        source_rate: Their rate (Hz).
        target_rate: The rate wanted (Hz).

    Returns:
        ``[..., resampled_length(t, source_rate, target_rate)]`` (the input itself when the rates
        are equal).
    """
    if source_rate == target_rate:
        return wave
    with torch.no_grad():
        return resampler(source_rate, target_rate)(wave)


def resampled_length(frames: int, source_rate: int, target_rate: int) -> int:
    """How many samples :func:`resample` makes of ``frames`` source frames.

    Computed as torchaudio computes it (in float32), so the two always agree.

    Args:
        frames: Source frames.
        source_rate: Their rate (Hz).
        target_rate: The rate wanted (Hz).

    Returns:
        The resampled length.
    """
    if source_rate == target_rate:
        return frames
    gcd = math.gcd(source_rate, target_rate)
    ratio = (target_rate // gcd) * frames / (source_rate // gcd)
    return int(torch.ceil(torch.as_tensor(ratio)).item())


def source_window(
    start: int, n: int, frames: int, source_rate: int, target_rate: int
) -> tuple[int, int, int]:
    """The source frames that target samples ``[start, start + n)`` are computed from.

    The resampler maps each block of ``source_rate / gcd`` source frames to ``target_rate / gcd``
    target samples, reading ``width`` frames beyond the block on each side. The window returned
    starts on a block boundary and reaches far enough on both sides that resampling it alone
    gives the same target samples as resampling the whole file (the file's own ends are
    zero-padded the same way in both).

    Args:
        start: First target sample of the crop.
        n: Crop length in target samples.
        frames: Source frames in the file.
        source_rate: The file's rate (Hz).
        target_rate: The rate wanted (Hz).

    Returns:
        ``(first, stop, offset)``: read source frames ``[first, stop)``, resample them, and the
        crop is the ``n`` samples from ``offset`` on.
    """
    if source_rate == target_rate:
        return start, start + n, 0
    gcd = math.gcd(source_rate, target_rate)
    block_in, block_out = source_rate // gcd, target_rate // gcd
    margin = math.ceil(resampler(source_rate, target_rate).width / block_in) + 1  # in blocks
    first_block = max(0, start // block_out - margin)
    stop = min(frames, ((start + n - 1) // block_out + 1 + margin) * block_in)
    return first_block * block_in, stop, start - first_block * block_out
