"""The front-end contract every audio encoder carries: rate, STFT, mel band, clip length."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

FILL_MODES = ("repeat", "repeatpad", "pad")


@dataclass(frozen=True)
class FrontendConfig:
    """How a waveform becomes the log-mel spectrogram an encoder was trained on.

    Args:
        sample_rate: Rate (Hz) of the waveform the encoder expects.
        n_fft: FFT size of the STFT.
        win_length: Hann window length (centred inside ``n_fft``).
        hop_length: STFT hop in samples.
        n_mels: Number of mel bins.
        fmin: Lowest filterbank edge (Hz).
        fmax: Highest filterbank edge (Hz).
        filterbank_rate: Rate the mel filterbank is designed for; ``None`` means
            ``sample_rate``. The released msclap 2023 model designs it for 32 kHz while feeding
            44.1 kHz audio, which stretches the real band by 44.1/32.
        clip_seconds: Clip duration the encoder was trained on.
        fill: How audio shorter than the clip is filled: ``"repeat"`` (tile then cut, msclap),
            ``"repeatpad"`` (tile whole copies then zero-pad, LAION) or ``"pad"`` (zeros).

    Raises:
        ValueError: If a field is out of range.
    """

    sample_rate: int
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    filterbank_rate: int | None = None
    clip_seconds: float = 10.0
    fill: str = "repeat"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"FrontendConfig.{name} must be a positive int, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(
                f"FrontendConfig.win_length ({self.win_length}) must not exceed n_fft "
                f"({self.n_fft})"
            )
        rate = self.mel_rate
        if not 0.0 <= self.fmin < self.fmax <= rate / 2:
            raise ValueError(
                f"FrontendConfig needs 0 <= fmin < fmax <= filterbank rate / 2; got fmin="
                f"{self.fmin}, fmax={self.fmax}, filterbank rate {rate}"
            )
        if not (math.isfinite(self.clip_seconds) and self.clip_seconds > 0):
            raise ValueError(
                f"FrontendConfig.clip_seconds must be positive, got {self.clip_seconds}"
            )
        if self.fill not in FILL_MODES:
            raise ValueError(f"FrontendConfig.fill must be one of {FILL_MODES}, got {self.fill!r}")

    @property
    def mel_rate(self) -> int:
        """The rate the mel filterbank is designed for."""
        return self.sample_rate if self.filterbank_rate is None else self.filterbank_rate

    @property
    def clip_samples(self) -> int:
        """Samples in one clip at ``sample_rate``."""
        return round(self.sample_rate * self.clip_seconds)

    @property
    def clip_frames(self) -> int:
        """STFT frames of one clip (centred STFT)."""
        return self.clip_samples // self.hop_length + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontendConfig:
        """Build from :meth:`to_dict` output.

        Args:
            d: Field names to values.

        Returns:
            The config.

        Raises:
            ValueError: If ``d`` names a field this class does not have.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FrontendConfig fields: {unknown}")
        return cls(**d)
