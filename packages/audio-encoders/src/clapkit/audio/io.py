"""Reading audio files into mono float32 waveforms, and fitting waveforms to a clip length."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from clapkit.audio.ffmpeg import FFMPEG_FIX, ffmpeg_available, ffmpeg_decode, ffmpeg_format
from clapkit.audio.resampling import resample, resampled_length, source_window

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


Select = Callable[[int, int], tuple[int, int]]
"""Given a file's frame count and rate, the frames ``[first, stop)`` to decode."""

# libsndfile subtypes that store integers (FLAC is always one of the PCM_* ones): decoded to
# float by a scale, their samples are finite by construction and skip the NaN/inf pass.
_INTEGER_SUBTYPES = frozenset({"ULAW", "ALAW", "ALAC_16", "ALAC_20", "ALAC_24", "ALAC_32"})


def _integer_samples(subtype: str) -> bool:
    return subtype.startswith("PCM_") or subtype in _INTEGER_SUBTYPES


def _open(source: AudioSource, name: str) -> str | BinaryIO:
    """A path or a seekable file object for soundfile, after the checks that need no decoder."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioLoadError(name, "file not found")
        if path.is_dir():
            raise AudioLoadError(name, "is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioLoadError(name, "file is empty (0 bytes)")
        return str(path)
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioLoadError(name, "no bytes given")
        return io.BytesIO(bytes(source))
    return source


def _too_long(name: str, frames: int, rate: int, max_seconds: float | None) -> None:
    if max_seconds is not None and frames > max_seconds * rate:
        raise AudioLoadError(
            name, f"too long: {frames / rate:.1f} s exceeds max_seconds={max_seconds}"
        )


def _read(
    source: AudioSource, name: str, max_seconds: float | None, select: Select | None = None
) -> tuple[np.ndarray, int, bool]:
    """Decode frames ``select(frames, rate)`` (default all) into ``[t, channels]`` float32.

    Returns:
        The samples, the file's rate, and whether the file stores integer samples (which
        decode to finite floats: no NaN/inf check needed).
    """
    handle = _open(source, name)
    try:
        with sf.SoundFile(handle) as audio_file:
            frames, rate = int(audio_file.frames), int(audio_file.samplerate)
            integer = _integer_samples(audio_file.subtype)
            _too_long(name, frames, rate, max_seconds)
            if audio_file.format == "WAV":
                promised = _wav_header_frames(handle)
                if promised is not None and promised > frames:
                    raise AudioLoadError(
                        name,
                        f"truncated: its header promises {promised} frames, the file holds "
                        f"{frames} ({frames / max(rate, 1):.2f} s of "
                        f"{promised / max(rate, 1):.2f} s)",
                    )
            first, stop = select(frames, rate) if select is not None else (0, frames)
            # libsndfile's Vorbis seek lands on wrong samples in a stream's last page; a seek
            # further back, read forward, is exact (tested against whole decodes)
            lead = min(first, max(2 * rate, 65536)) if audio_file.subtype == "VORBIS" else 0
            if first:
                audio_file.seek(first - lead)
            data = audio_file.read(stop - first + lead, dtype="float32", always_2d=True)
            data = data[lead:] if lead else data  # (a view only where there is a lead)
            if len(data) < stop - first:
                raise AudioLoadError(
                    name,
                    f"truncated: {len(data)} of frames {first}-{stop} could be read, the header "
                    f"promises {frames}",
                )
    except AudioLoadError:
        raise
    except PermissionError as error:
        raise AudioLoadError(name, f"unreadable: {error}") from error
    except (sf.LibsndfileError, RuntimeError, EOFError, TypeError) as error:
        message = str(error)
        if "recognised" in message or "recognized" in message:
            return _read_with_ffmpeg(handle, name, max_seconds, select, message)
        raise AudioLoadError(name, f"unreadable or corrupt audio ({message})") from error
    return data, rate, integer


def _read_with_ffmpeg(
    handle: str | BinaryIO,
    name: str,
    max_seconds: float | None,
    select: Select | None,
    soundfile_message: str,
) -> tuple[np.ndarray, int, bool]:
    """What libsndfile did not recognise: FFmpeg's formats through PyAV, anything else refused."""
    if isinstance(handle, str):
        with open(handle, "rb") as head_file:
            head = head_file.read(16)
    else:
        handle.seek(0)
        head = handle.read(16)
    kind = ffmpeg_format(name, head)
    if kind is None:
        raise AudioLoadError(name, f"not an audio file soundfile can decode ({soundfile_message})")
    if not ffmpeg_available():
        raise AudioLoadError(
            name, f"{kind} is a format libsndfile cannot decode; to read it: {FFMPEG_FIX}"
        )
    try:
        data, rate, seconds = ffmpeg_decode(handle, max_seconds)
    except Exception as error:
        raise AudioLoadError(name, f"unreadable or corrupt {kind} ({error})") from error
    _too_long(name, round(seconds * rate), rate, max_seconds)
    first, stop = select(len(data), rate) if select is not None else (0, len(data))
    return np.ascontiguousarray(data[first:stop]), rate, False


def _mono(data: np.ndarray, name: str, integer: bool = False) -> Tensor:
    """Average the channels of ``[t, channels]`` samples after checking they are usable.

    ``integer``: decoded from integer samples, hence finite (the NaN/inf pass is skipped).
    """
    if data.shape[0] == 0:
        raise AudioLoadError(name, "contains zero samples")
    # NaN and inf survive a float64 sum (which no float32 audio overflows): one cheap pass
    if not integer and not math.isfinite(float(data.sum(dtype=np.float64))):
        bad = int((~np.isfinite(data)).sum())
        raise AudioLoadError(name, f"contains {bad} non-finite samples (NaN or inf)")
    if data.shape[1] == 1:
        return torch.from_numpy(np.ascontiguousarray(data[:, 0]))
    return torch.from_numpy(data.mean(axis=1, dtype=np.float32))


def load_audio(
    source: AudioSource, sample_rate: int, *, max_seconds: float | None = None
) -> Tensor:
    """Decode an audio file to a mono float32 waveform at ``sample_rate``.

    Formats: whatever libsndfile decodes (wav, flac, ogg/vorbis, mp3, aiff, ...), and M4A/MP4,
    AAC, WebM/Opus and WMA through FFmpeg when ``clapkit-audio-encoders[ffmpeg]`` is installed
    (refused with that fix named otherwise). Channels are averaged (never concatenated); the
    rate is converted with the resampling kernel cached for the rate pair
    (:func:`clapkit.audio.resampling.resample`, the samples of
    ``torchaudio.functional.resample``). Silence is valid audio.

    Args:
        source: A path, the bytes of a file, or a binary file object.
        sample_rate: Target rate (Hz).
        max_seconds: Refuse files longer than this (checked before decoding).

    Returns:
        ``[t]`` float32 waveform.

    Raises:
        AudioLoadError: Naming the source: missing, a directory, empty, not audio, a format
            that needs FFmpeg when it is not installed, unreadable or corrupt, longer than
            ``max_seconds``, zero samples, or non-finite samples.
        ValueError: If ``sample_rate`` is not a positive int.
    """
    _check_rate(sample_rate)
    name = _describe(source)
    data, rate, integer = _read(source, name, max_seconds)
    return resample(_mono(data, name, integer), rate, sample_rate).contiguous()


def load_crop(
    source: AudioSource,
    sample_rate: int,
    n: int,
    start: Callable[[int], int],
    *,
    max_seconds: float | None = None,
) -> Tensor:
    """Decode only an ``n``-sample crop of a file, at ``sample_rate``.

    The file's header gives its length at ``sample_rate``; if that is more than ``n``,
    ``start(length)`` chooses where the crop begins and only the source frames that crop is
    computed from are read (a seek, then a read: WAV, FLAC, OGG, MP3 and the other libsndfile
    formats; FFmpeg's formats are decoded whole and the crop copied out). The samples equal
    ``load_audio(source, sample_rate)[s : s + n]``. The tensor returned holds only the crop.

    Args:
        source: A path, the bytes of a file, or a binary file object.
        sample_rate: Target rate (Hz).
        n: Crop length in samples at ``sample_rate``.
        start: Maps the file's length at ``sample_rate`` (more than ``n``) to the crop's first
            sample, in ``[0, length - n]``.
        max_seconds: Refuse files longer than this (checked before decoding).

    Returns:
        ``[min(n, length)]`` float32: the crop, or the whole file when it is not longer than
        ``n`` (fill it with :func:`fit_length`).

    Raises:
        AudioLoadError: As :func:`load_audio` (about the frames read).
        ValueError: ``sample_rate`` or ``n`` not positive, or ``start`` out of range.
    """
    _check_rate(sample_rate)
    if n < 1:
        raise ValueError(f"crop length must be >= 1, got {n}")
    name = _describe(source)
    where: dict[str, int] = {}

    def select(frames: int, rate: int) -> tuple[int, int]:
        length = resampled_length(frames, rate, sample_rate)
        if length <= n:
            return 0, frames
        first = start(length)
        if not 0 <= first <= length - n:
            raise ValueError(f"crop start {first} outside [0, {length - n}] for {name}")
        read_from, read_to, where["offset"] = source_window(first, n, frames, rate, sample_rate)
        return read_from, read_to

    data, rate, integer = _read(source, name, max_seconds, select)
    owned = data.base is None  # not a view keeping more samples alive (a Vorbis lead, FFmpeg)
    wave = resample(_mono(data, name, integer), rate, sample_rate)
    if "offset" not in where:
        return wave.contiguous()
    crop = wave[where["offset"] : where["offset"] + n]
    # the file's last sample can fall one short (torchaudio rounds lengths in float32)
    if crop.shape[0] < n:
        return _pad_to(crop, n)
    # a copy only where the decoded window holds more than the crop (resampling's margins)
    alone = owned and crop.storage_offset() == 0 and crop.untyped_storage().nbytes() == 4 * n
    return crop if alone else crop.clone()


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")


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
        return _tile(wave, n, n)
    if mode == "repeatpad":
        return _tile(wave, n, n // length * length)
    return _pad_to(wave, n)


def _tile(wave: Tensor, n: int, tiled: int) -> Tensor:
    """``[..., n]``: the first ``tiled`` samples copies of ``wave`` end to end, then zeros.

    One buffer of ``n`` samples, filled by copies that double what is written (no larger
    tiling kept alive as the view of a cut).
    """
    out = wave.new_empty(*wave.shape[:-1], n)
    out[..., tiled:] = 0
    done = min(wave.shape[-1], tiled)
    out[..., :done] = wave[..., :done]
    while done < tiled:  # done stays a multiple of the period until the last copy
        step = min(done, tiled - done)
        out[..., done : done + step] = out[..., :step]
        done += step
    return out


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
