"""Formats libsndfile cannot read (M4A/MP4 with AAC or ALAC, raw AAC, WebM/Opus, WMA), decoded
through FFmpeg by PyAV when ``clapkit-audio-encoders[ffmpeg]`` is installed, else refused by name.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import PurePath
from typing import BinaryIO

import numpy as np

FFMPEG_FIX = "pip install 'clapkit-audio-encoders[ffmpeg]' (PyAV, with FFmpeg in its wheels)"
"""What to install for the formats below."""

FFMPEG_SUFFIXES = {
    ".m4a": "M4A (AAC/ALAC in MP4)",
    ".mp4": "MP4",
    ".aac": "AAC",
    ".webm": "WebM",
    ".opus": "Opus",
    ".wma": "WMA",
}


def ffmpeg_format(name: str, head: bytes) -> str | None:
    """The FFmpeg-only format a source looks like (by its first bytes, then its name), or None.

    Args:
        name: The source's path or name.
        head: Its first bytes (16 are enough).

    Returns:
        The format in words, e.g. ``"M4A (AAC/ALAC in MP4)"``, or None for anything else.
    """
    if head[4:8] == b"ftyp":
        return FFMPEG_SUFFIXES[".m4a"]
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:  # ADTS sync, layer 0
        return FFMPEG_SUFFIXES[".aac"]
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return FFMPEG_SUFFIXES[".webm"]
    return FFMPEG_SUFFIXES.get(PurePath(name).suffix.lower())


def ffmpeg_available() -> bool:
    """Whether PyAV is installed."""
    return importlib.util.find_spec("av") is not None


def ffmpeg_decode(
    handle: str | BinaryIO, max_seconds: float | None = None
) -> tuple[np.ndarray, int, float]:
    """Decode the first audio stream with FFmpeg to ``[t, channels]`` float32.

    Compressed streams in these containers do not seek to an exact sample, so the whole stream
    is decoded (the caller copies its crop out and lets the rest go).

    Args:
        handle: A path or a seekable binary file object.
        max_seconds: Stop before decoding if the container says it is longer.

    Returns:
        ``(samples, rate, seconds)``: ``seconds`` is the container's duration (0 when unknown);
        decoding stops there when it exceeds ``max_seconds``, with ``samples`` empty.

    Raises:
        ValueError: No audio stream.
        av.error.FFmpegError: FFmpeg could not read it.
    """
    import av

    source = handle if isinstance(handle, (str, os.PathLike)) else _rewound(handle)
    with av.open(source, mode="r") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        seconds = (container.duration or 0) / av.time_base
        if max_seconds is not None and seconds > max_seconds:
            return np.zeros((0, 1), np.float32), int(stream.rate), seconds
        to_float = av.AudioResampler(format="fltp")
        chunks = [
            planar.to_ndarray()
            for frame in container.decode(stream)
            for planar in to_float.resample(frame)
        ]
        chunks += [planar.to_ndarray() for planar in to_float.resample(None)]
    if not chunks:
        return np.zeros((0, 1), np.float32), int(stream.rate), seconds
    return np.ascontiguousarray(np.concatenate(chunks, axis=1).T), int(stream.rate), seconds


def _rewound(handle: BinaryIO) -> BinaryIO:
    if isinstance(handle, io.BytesIO):
        handle.seek(0)
        return handle
    handle.seek(0)
    return io.BytesIO(handle.read())
