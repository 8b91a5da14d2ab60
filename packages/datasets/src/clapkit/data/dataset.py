"""Map-style dataset over a manifest: decoding, cropping and caption sampling, seeded per item.

Every random choice for item ``i`` in epoch ``e`` comes from a generator seeded with
``(seed, e, i)``, so an item is the same whichever worker or process loads it and a resumed run
sees the same crops and captions as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from clapkit.audio import AudioLoadError, FrontendConfig, fit_length, load_audio, load_crop
from clapkit.data.epoch import SharedEpoch, SharedEpochMixin
from clapkit.data.manifest import ManifestRecord, read_manifest

logger = logging.getLogger(__name__)

OnError = Literal["skip", "raise"]
Source = str | bytes | Path | BinaryIO
"""A clip's audio: a path, a file's bytes, or a seekable binary file."""
# What a broken or unreadable file raises from load_audio (AudioLoadError is a ValueError).
LOAD_ERRORS = (ValueError, OSError, RuntimeError)


class ClapExample(TypedDict):
    """One loaded clip. ``waveform`` is ``[t]`` float32 at the front end's rate, ``t`` = clip."""

    waveform: torch.Tensor
    caption: str
    labels: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class SkippedItem:
    """Stands in for a clip that could not be loaded; the collator drops it and reports it."""

    key: str
    source: str
    reason: str


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator for one item's random choices, independent of worker and process.

    Args:
        seed: the run's seed.
        epoch: the epoch.
        index: the item's index (or any stable per-item integer).

    Returns:
        A CPU ``torch.Generator`` seeded from the three numbers.
    """
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class ClipLoader:
    """Decodes, resamples and crops clips to a front end's contract, with an optional cache.

    Args:
        frontend: the audio encoder's front end (sample rate, clip duration, fill mode).
        train: random crops (and random placement of short clips if ``shift_short_clips``) from
            the item's generator; otherwise deterministic (long clips centre-cropped, short clips
            filled as ``frontend.fill`` says).
        on_error: ``"skip"`` returns a ``SkippedItem`` (logged once per file), ``"raise"`` raises.
        cache_audio: keep decoded waveforms in memory (per process; helps small datasets).
        shift_short_clips: in training, put a clip shorter than the crop at a random offset in a
            zero-padded window instead of filling it (a time-shift augmentation).
    """

    def __init__(
        self,
        frontend: FrontendConfig,
        *,
        train: bool,
        on_error: OnError = "raise",
        cache_audio: bool = False,
        shift_short_clips: bool = False,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.frontend = frontend
        self.train = train
        self.on_error: OnError = on_error
        self.cache_audio = cache_audio
        self.shift_short_clips = shift_short_clips
        self._cache: dict[str, torch.Tensor | str] = {}

    def decode(self, source: Source, name: str) -> torch.Tensor | SkippedItem:
        """The whole clip ``[t]`` at the front end's rate, or a ``SkippedItem`` when skipping.

        Raises:
            ValueError: (``AudioLoadError``) the file is bad and ``on_error="raise"``.
        """
        cached = self._cache.get(name)
        if isinstance(cached, torch.Tensor):
            return cached
        if isinstance(cached, str):
            return SkippedItem(key=name, source=name, reason=cached)
        wave = self._guarded(lambda: load_audio(source, self.frontend.sample_rate), name)
        if self.cache_audio:
            self._cache[name] = wave if isinstance(wave, torch.Tensor) else wave.reason
        return wave

    def load(
        self, source: Source, name: str, generator: torch.Generator
    ) -> torch.Tensor | SkippedItem:
        """The clip fitted to the front end (:meth:`crop`), decoding only the crop's frames.

        A clip longer than the crop is cut where :meth:`crop` would cut it (the same draw from
        ``generator``), but only the frames of that window are decoded (``load_crop``); with
        ``cache_audio`` whole clips are decoded and kept instead.

        Raises:
            ValueError: (``AudioLoadError``) the file is bad and ``on_error="raise"``.
        """
        if self.cache_audio:
            whole = self.decode(source, name)
            return whole if isinstance(whole, SkippedItem) else self.crop(whole, generator)
        n = self.frontend.clip_samples

        def start(length: int) -> int:
            if self.train:  # the draw fit_length's random_crop makes
                return int(torch.randint(0, length - n + 1, (1,), generator=generator).item())
            return (length - n) // 2

        wave = self._guarded(lambda: load_crop(source, self.frontend.sample_rate, n, start), name)
        return wave if isinstance(wave, SkippedItem) else self.crop(wave, generator)

    def _guarded(self, read: Callable[[], torch.Tensor], name: str) -> torch.Tensor | SkippedItem:
        """``read()``, or on a bad file a ``SkippedItem`` (skipping) or an error naming ``name``."""
        try:
            return read()
        except LOAD_ERRORS as error:
            named: Exception = error
            if isinstance(error, AudioLoadError) and error.source != name:
                named = AudioLoadError(name, error.cause)  # bytes: say which clip
            if self.on_error == "raise":
                if named is error:
                    raise
                raise named from error
            reason = f"{type(named).__name__}: {named}"
            logger.warning("skipping bad audio %s: %s", name, reason)
            return SkippedItem(key=name, source=name, reason=reason)

    def crop(self, wave: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fit a clip to ``frontend.clip_samples``.

        Shapes:
            wave: ``[t_in]``; returns ``[t]`` with ``t = frontend.clip_samples``.
        """
        n = self.frontend.clip_samples
        if self.train and wave.shape[-1] > n:
            return fit_length(wave, n, "random_crop", generator=generator)
        if not self.train and wave.shape[-1] > n:
            return fit_length(wave, n, "center_crop")
        if self.train and self.shift_short_clips and wave.shape[-1] < n:
            offset = int(torch.randint(0, n - wave.shape[-1] + 1, (1,), generator=generator))
            out = wave.new_zeros(n)
            out[offset : offset + wave.shape[-1]] = wave
            return out
        return fit_length(wave, n, self.frontend.fill, generator=generator)


class ManifestDataset(SharedEpochMixin, Dataset):
    """Audio-caption pairs from a manifest, loaded to an audio encoder's front-end contract.

    In training a caption is drawn from each clip's caption list and a random crop is taken;
    in evaluation the first caption and a deterministic crop are used. The epoch
    (``set_epoch``) is shared with the DataLoader's workers, persistent ones included
    (:class:`clapkit.data.SharedEpoch`).

    Args:
        manifest: a manifest path or already read records.
        frontend: the audio encoder's ``FrontendConfig``.
        train: training (random crop, caption sampling) or evaluation (deterministic).
        seed: seeds every random choice together with the epoch and the item index.
        on_error: ``"skip"`` (default in training) or ``"raise"`` (default in evaluation).
        cache_audio: keep decoded waveforms in memory (each DataLoader worker has its own).
        require_captions: fail at construction if a clip has no caption (default: ``train``).
        shift_short_clips: see ``ClipLoader``.

    Raises:
        ManifestError: a line of the manifest is malformed.
        ValueError: ``require_captions`` and a clip has no caption (named).
    """

    def __init__(
        self,
        manifest: str | os.PathLike[str] | Sequence[ManifestRecord],
        frontend: FrontendConfig,
        *,
        train: bool,
        seed: int = 0,
        on_error: OnError | None = None,
        cache_audio: bool = False,
        require_captions: bool | None = None,
        shift_short_clips: bool = False,
    ) -> None:
        if isinstance(manifest, (str, os.PathLike)):
            self.records = read_manifest(manifest)
        else:
            self.records = list(manifest)
        if require_captions if require_captions is not None else train:
            missing = [r.key for r in self.records if not r.captions]
            if missing:
                raise ValueError(f"{len(missing)} clips have no caption, e.g. {missing[:5]}")
        self.loader = ClipLoader(
            frontend,
            train=train,
            on_error=on_error or ("skip" if train else "raise"),
            cache_audio=cache_audio,
            shift_short_clips=shift_short_clips,
        )
        self.seed = seed
        self.shared_epoch = SharedEpoch()

    @property
    def train(self) -> bool:
        """Whether items are drawn at random (training) or deterministically."""
        return self.loader.train

    def labels(self) -> list[str]:
        """The sorted set of labels over the manifest."""
        return sorted({label for record in self.records for label in record.labels})

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ClapExample | SkippedItem:
        record = self.records[index]
        generator = item_generator(self.seed, self.epoch if self.train else 0, index)
        caption = ""  # drawn before the crop: an epoch's captions and crops as they always were
        if record.captions:
            pick = 0
            if self.train and len(record.captions) > 1:
                pick = int(torch.randint(0, len(record.captions), (1,), generator=generator))
            caption = record.captions[pick]
        wave = self.loader.load(record.audio, str(record.audio), generator)
        if isinstance(wave, SkippedItem):
            return SkippedItem(key=record.key, source=str(record.audio), reason=wave.reason)
        return ClapExample(
            waveform=wave,
            caption=caption,
            labels=record.labels,
            key=record.key,
        )
