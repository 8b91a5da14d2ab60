"""What ``embed_audio`` accepts, split into checked items: files, waveforms, arrays, HF dicts.

An item is a path or the bytes of a file (decoded by ``clapkit.audio.load_audio``), a ``[t]``
waveform (a torch tensor or a numpy array) at ``sample_rate`` (default: the model's), or an
audio dict of HF ``datasets`` (``{"array": ..., "sampling_rate": ...}``, as its ``Audio``
feature decodes it), at its own rate. Every waveform is checked here, before any file is
decoded or any model runs, and an item is refused by its index with what is wrong with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clapkit.core.registry import import_encoder_package

__all__ = ["AudioInput", "AudioItem", "RatedWave", "as_audio_items", "load_item"]

AudioItem = str | os.PathLike[str] | bytes | Tensor | np.ndarray | Mapping[str, Any]
AudioInput = Tensor | np.ndarray | AudioItem | Sequence[AudioItem]


@dataclass(frozen=True)
class RatedWave:
    """A checked waveform and the rate it is at.

    Attributes:
        wave: float32 mono samples. Shape ``[t]``.
        rate: its sample rate (Hz), or ``None`` for the model's own rate.
    """

    wave: Tensor
    rate: int | None


def _check_rate(rate: Any, what: str) -> int:
    if isinstance(rate, (bool, float)) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{what}: the sample rate must be a positive int, got {rate!r}")
    return int(rate)


def _as_wave(data: Any, what: str) -> Tensor:
    """A float32 ``[t]`` tensor of a tensor or numpy array, or a named error."""
    kind = "array" if isinstance(data, np.ndarray) else "tensor"
    if isinstance(data, np.ndarray):
        if not np.issubdtype(data.dtype, np.floating):
            raise TypeError(
                f"{what} is a numpy array of {data.dtype}, not of floats: scale integer PCM to "
                "[-1, 1] first (e.g. x / 32768 for int16)"
            )
        data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    elif isinstance(data, Tensor):
        if not data.is_floating_point():
            raise TypeError(f"{what} is a tensor of {data.dtype}, not of floats")
    else:
        raise TypeError(f"{what} is a {type(data).__name__}, not a waveform")
    if data.ndim != 1:
        raise ValueError(f"{what} must be a [t] waveform, got shape {tuple(data.shape)}")
    if data.numel() == 0:
        raise ValueError(f"{what} is an empty waveform (0 samples)")
    wave = data.detach().float()
    finite = torch.isfinite(wave)
    if not bool(finite.all()):
        bad, first = int((~finite).sum()), int((~finite).nonzero()[0, 0])
        raise import_encoder_package("clapkit.audio").AudioLoadError(
            f"{what} ([{wave.shape[0]}] {kind})",
            f"contains {bad} non-finite samples (NaN or inf), the first at sample {first}",
        )
    return wave


def _from_dict(item: Mapping[str, Any], what: str) -> RatedWave:
    """An HF ``datasets`` audio dict: ``array`` at ``sampling_rate``."""
    missing = [key for key in ("array", "sampling_rate") if key not in item]
    if missing:
        raise ValueError(
            f"{what} is a dict without {missing}: an audio dict holds 'array' and "
            f"'sampling_rate' (HF datasets' Audio feature); it has {sorted(item)}"
        )
    array = item["array"]
    if isinstance(array, list):
        array = np.asarray(array, dtype=np.float32)
    rate = _check_rate(item["sampling_rate"], what)
    return RatedWave(_as_wave(array, f"{what}['array']"), rate)


def as_audio_items(audio: AudioInput, sample_rate: int | None = None) -> list[Any]:
    """Split an ``embed_audio`` input into checked items, in order.

    Args:
        audio: a waveform ``[t]`` or batch ``[b, t]`` (tensor or numpy array), a path, bytes,
            an audio dict, or a list of those (waveforms of any lengths).
        sample_rate: the rate of the tensors and arrays given (``None``: the model's rate);
            audio dicts carry their own.

    Returns:
        Paths and bytes as given, waveforms as `RatedWave`.

    Raises:
        clapkit.audio.AudioLoadError: a waveform with NaN or inf (``audio item i``).
        ValueError: a waveform of another rank, an empty waveform or input, a bad rate, an
            audio dict without ``array`` or ``sampling_rate``.
        TypeError: an input or item of another type, or an array of integers.
    """
    rate = None if sample_rate is None else _check_rate(sample_rate, "sample_rate")
    if isinstance(audio, (Tensor, np.ndarray)):
        if audio.ndim not in (1, 2):
            raise ValueError(
                f"an audio {type(audio).__name__} must be [t] or [b, t], "
                f"got shape {tuple(audio.shape)}"
            )
        items: list[Any] = [audio] if audio.ndim == 1 else list(audio)
    elif isinstance(audio, (str, bytes, os.PathLike, Mapping)):
        items = [audio]
    elif isinstance(audio, Iterable):
        items = list(audio)
    else:
        raise TypeError(
            "audio must be a waveform (tensor or numpy array), a path, bytes, an audio dict or a "
            f"list of those, got {type(audio).__name__}"
        )
    if not items:
        raise ValueError("no audio given (empty list)")
    checked: list[Any] = []
    for index, item in enumerate(items):
        what = f"audio item {index}"
        if isinstance(item, (str, bytes, os.PathLike)):
            checked.append(item)
        elif isinstance(item, Mapping):
            checked.append(_from_dict(item, what))
        elif isinstance(item, (Tensor, np.ndarray)):
            checked.append(RatedWave(_as_wave(item, what), rate))
        else:
            raise TypeError(
                f"{what} is a {type(item).__name__}, not a path, bytes, waveform or audio dict"
            )
    return checked


def load_item(item: Any, sample_rate: int) -> Tensor:
    """One item as a float32 ``[t]`` waveform at ``sample_rate``: decoded or resampled.

    Args:
        item: from `as_audio_items`.
        sample_rate: the model's rate (Hz).

    Returns:
        The waveform.

    Raises:
        clapkit.audio.AudioLoadError: a file that cannot be decoded.
    """
    audio = import_encoder_package("clapkit.audio")
    if not isinstance(item, RatedWave):
        return audio.load_audio(item, sample_rate)
    if item.rate is None or item.rate == sample_rate:
        return item.wave
    return _resample(audio, item.wave, item.rate, sample_rate)


def _resample(audio: Any, wave: Tensor, source_rate: int, target_rate: int) -> Tensor:
    """``clapkit.audio.resample``: the resampling of its ``load_audio``, kernels cached per rate
    pair."""
    resampled: Tensor = audio.resample(wave, source_rate, target_rate)
    return resampled.contiguous()
