"""Reading audio files into mono float32 waveforms, and fitting waveforms to a clip length."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

AudioSource = str | os.PathLike | bytes | bytearray | BinaryIO
"""A path, the bytes of a file, or a readable binary file object."""

FIT_MODES = ("repeat", "repeatpad", "pad", "center_crop", "random_crop")


class AudioLoadError(ValueError):
    """An audio source could not be turned into a waveform; the message names it and the cause.

    Attributes:
        source: How the source is named in the message (path, ``<bytes>``, file name).
        cause: The problem, in words.
    """

    def __init__(self, source: str, cause: str) -> None:
        super().__init__(f"{source}: {cause}")
        self.source = source
        self.cause = cause


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "name", "<file object>"))


def _wav_header_frames(handle: str | BinaryIO) -> int | None:
    """Frames a RIFF/WAVE header promises (data chunk size / block align), or None if unknown.

    libsndfile clamps a WAV's frame count to what the file holds, so a file cut short reads as a
    shorter clip without complaint; the header still says how long it was meant to be.
    """
    if isinstance(handle, str):
        with open(handle, "rb") as f:
            head = f.read(1 << 16)
    else:
        position = handle.tell()
        handle.seek(0)
        head = handle.read(1 << 16)
        handle.seek(position)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None  # RF64, W64 and others: no 32-bit RIFF header to trust
    block_align, offset = None, 12
    while offset + 8 <= len(head):
        chunk, size = (
            head[offset : offset + 4],
            int.from_bytes(head[offset + 4 : offset + 8], "little"),
        )
        if chunk == b"fmt " and offset + 22 <= len(head):
            block_align = int.from_bytes(head[offset + 20 : offset + 22], "little")
        if chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):  # streaming writers leave it unset
                return None
            return size // block_align
        offset += 8 + size + (size & 1)
    return None


def _read(source: AudioSource, name: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode with soundfile into ``[t, channels]`` float32 and the file's rate."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioLoadError(name, "file not found")
        if path.is_dir():
            raise AudioLoadError(name, "is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioLoadError(name, "file is empty (0 bytes)")
        handle: str | BinaryIO = str(path)
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioLoadError(name, "no bytes given")
        handle = io.BytesIO(bytes(source))
    else:
        handle = source
    try:
        with sf.SoundFile(handle) as audio_file:
            if max_seconds is not None and audio_file.frames > max_seconds * audio_file.samplerate:
                raise AudioLoadError(
                    name,
                    f"too long: {audio_file.frames / audio_file.samplerate:.1f} s exceeds "
                    f"max_seconds={max_seconds}",
                )
            data = audio_file.read(dtype="float32", always_2d=True)
            rate = int(audio_file.samplerate)
            if audio_file.format == "WAV":
                promised = _wav_header_frames(handle)
                if promised is not None and promised > len(data):
                    raise AudioLoadError(
                        name,
                        f"truncated: its header promises {promised} frames, the file holds "
                        f"{len(data)} ({len(data) / max(rate, 1):.2f} s of "
                        f"{promised / max(rate, 1):.2f} s)",
                    )
    except AudioLoadError:
        raise
    except PermissionError as error:
        raise AudioLoadError(name, f"unreadable: {error}") from error
    except (sf.LibsndfileError, RuntimeError, EOFError, TypeError) as error:
        message = str(error)
        if "recognised" in message or "recognized" in message:
            raise AudioLoadError(
                name, f"not an audio file soundfile can decode ({message})"
            ) from error
        raise AudioLoadError(name, f"unreadable or corrupt audio ({message})") from error
    return data, rate


def load_audio(
    source: AudioSource, sample_rate: int, *, max_seconds: float | None = None
) -> Tensor:
    """Decode an audio file to a mono float32 waveform at ``sample_rate``.

    Formats: whatever libsndfile decodes (wav, flac, ogg/vorbis, mp3, aiff, ...). Channels are
    averaged (never concatenated); the rate is converted with ``torchaudio.functional.resample``.
    Silence is valid audio.

    Args:
        source: A path, the bytes of a file, or a binary file object.
        sample_rate: Target rate (Hz).
        max_seconds: Refuse files longer than this (checked before decoding).

    Returns:
        ``[t]`` float32 waveform.

    Raises:
        AudioLoadError: Naming the source: missing, a directory, empty, not audio, unreadable or
            corrupt, longer than ``max_seconds``, zero samples, or non-finite samples.
        ValueError: If ``sample_rate`` is not a positive int.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    name = _describe(source)
    data, rate = _read(source, name, max_seconds)
    if data.shape[0] == 0:
        raise AudioLoadError(name, "contains zero samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioLoadError(name, f"contains {bad} non-finite samples (NaN or inf)")
    waveform = torch.from_numpy(data.mean(axis=1, dtype=np.float32))
    if rate != sample_rate:
        waveform = AF.resample(waveform, rate, sample_rate)
    return waveform.contiguous()


def _pad_to(wave: Tensor, n: int) -> Tensor:
    return torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))


def fit_length(
    wave: Tensor,
    n: int,
    mode: str = "repeat",
    generator: torch.Generator | None = None,
    *,
    fill: str = "pad",
) -> Tensor:
    """Make a waveform exactly ``n`` samples long.

    Modes for audio shorter than ``n``: ``"repeat"`` tiles it then cuts (msclap), ``"repeatpad"``
    tiles whole copies then zero-pads (LAION), ``"pad"`` zero-pads at the end. These three keep
    the first ``n`` samples of longer audio. ``"center_crop"`` and ``"random_crop"`` take a
    centred or a random (from ``generator``) window of longer audio and fill shorter audio
    as ``fill`` says.

    Args:
        wave: ``[..., t]`` waveform(s), ``t >= 1``.
        n: Target length.
        mode: One of ``"repeat"``, ``"repeatpad"``, ``"pad"``, ``"center_crop"``,
            ``"random_crop"``.
        generator: Random source of ``"random_crop"`` (``None`` = global RNG).
        fill: Fill mode (``"repeat"``, ``"repeatpad"``, ``"pad"``) for short audio in the
            crop modes.

    Returns:
        ``[..., n]``.

    Raises:
        ValueError: On an unknown mode, ``n < 1`` or an empty waveform.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"unknown fit mode {mode!r}; choose one of {FIT_MODES}")
    if n < 1:
        raise ValueError(f"target length must be >= 1, got {n}")
    length = wave.shape[-1]
    if length == 0:
        raise ValueError("cannot fit an empty waveform (0 samples)")
    if mode in ("center_crop", "random_crop"):
        if fill not in ("repeat", "repeatpad", "pad"):
            raise ValueError(f"unknown fill {fill!r}; choose repeat, repeatpad or pad")
        if length <= n:
            return fit_length(wave, n, fill)
        if mode == "center_crop":
            start = (length - n) // 2
        else:
            start = int(torch.randint(0, length - n + 1, (1,), generator=generator).item())
        return wave[..., start : start + n]
    if length >= n:
        return wave[..., :n]
    if mode == "repeat":
        repeats = [1] * (wave.ndim - 1) + [math.ceil(n / length)]
        return wave.repeat(*repeats)[..., :n]
    if mode == "repeatpad":
        repeats = [1] * (wave.ndim - 1) + [n // length]
        return _pad_to(wave.repeat(*repeats), n)
    return _pad_to(wave, n)


def windows(wave: Tensor, n: int, hop: int) -> Tensor:
    """Cut a long waveform into windows of ``n`` samples that together cover all of it.

    Windows start every ``hop`` samples; when the last one stops short of the end, one more
    window aligned to the end is added, so no sample is dropped and none is padding.

    Args:
        wave: ``[t]`` waveform with ``t >= n``.
        n: Window length.
        hop: Distance between window starts.

    Returns:
        ``[w, n]``.

    Raises:
        ValueError: If ``wave`` is not 1-D, shorter than ``n`` (fill it with
            :func:`fit_length` first), or ``n``/``hop`` is not positive.
    """
    if wave.ndim != 1:
        raise ValueError(f"windows expects a 1-D waveform, got shape {tuple(wave.shape)}")
    if n < 1 or hop < 1:
        raise ValueError(f"window length and hop must be positive, got n={n}, hop={hop}")
    if wave.shape[0] < n:
        raise ValueError(
            f"waveform has {wave.shape[0]} samples, fewer than one window of {n}; "
            "use fit_length first"
        )
    frames = wave.unfold(0, n, hop)
    covered = (frames.shape[0] - 1) * hop + n
    if covered < wave.shape[0]:
        frames = torch.cat([frames, wave[-n:].unsqueeze(0)], dim=0)
    return frames
