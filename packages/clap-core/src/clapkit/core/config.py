"""The typed configuration of a `ClapModel`, written to ``config.json``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from clapkit.core.projection import PROJECTIONS

__all__ = ["ClapConfig"]

CONFIG_FORMAT = "clapkit-clap/1"


@dataclass
class ClapConfig:
    """Everything needed to rebuild a `ClapModel` (with random weights) before loading weights.

    Temperature convention: ``logits = exp(logit_scale) * cos(audio, text)`` where the stored
    parameter starts at ``logit_scale = ln(1 / init_temperature)``, i.e. ``init_temperature`` is
    CLIP's temperature (a divisor of the cosine), and ``exp(logit_scale)`` is clamped to
    ``max_logit_scale`` (100) in every forward.

    The default 0.007 is the paper's printed initial value (arXiv 2309.05767, section 2.1). Read
    as a temperature it asks for a multiplier of 142.9, above the clamp, so training starts AT the
    clamp: ``logit_scale = ln(100)``, from where it learns downwards as usual (the clamp passes
    gradient at its boundary). msclap's code starts from ``ln(1/0.07)`` (multiplier 14.3): pass
    ``init_temperature=0.07`` for that. Loaded checkpoints keep their trained value either way.

    Args:
        audio: the audio encoder's ``get_config()``.
        text: the text encoder's ``get_config()``.
        projection: ``"msclap"``, ``"mlp"`` or ``"linear"`` (see `build_projection`).
        projection_dim: joint-space size.
        projection_dropout: dropout of the ``"msclap"`` projection.
        init_temperature: initial temperature (see above).
        max_logit_scale: ``exp(logit_scale)`` is clamped to at most this; ``None`` = no clamp.
        format: version tag of this file layout.

    Raises:
        ValueError: on an unknown projection or out-of-range numbers.
    """

    audio: dict[str, Any]
    text: dict[str, Any]
    projection: str = "msclap"
    projection_dim: int = 1024
    projection_dropout: float = 0.5
    init_temperature: float = 0.007
    max_logit_scale: float | None = 100.0
    format: str = field(default=CONFIG_FORMAT)

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {self.projection!r}; choose one of {PROJECTIONS}")
        if self.projection_dim <= 0:
            raise ValueError(f"projection_dim must be positive, got {self.projection_dim}")
        if not 0.0 <= self.projection_dropout < 1.0:
            raise ValueError(f"projection_dropout must be in [0, 1), got {self.projection_dropout}")
        if not (math.isfinite(self.init_temperature) and self.init_temperature > 0):
            raise ValueError(f"init_temperature must be positive, got {self.init_temperature}")
        if self.max_logit_scale is not None and not self.max_logit_scale > 0:
            raise ValueError(f"max_logit_scale must be positive, got {self.max_logit_scale}")
        if self.format != CONFIG_FORMAT:
            raise ValueError(f"unsupported config format {self.format!r}; expected {CONFIG_FORMAT}")

    @property
    def initial_logit_scale(self) -> float:
        """The parameter's starting value: ``ln(1 / init_temperature)``, at most the clamp."""
        start = math.log(1.0 / self.init_temperature)
        limit = self.max_log_logit_scale
        return start if limit is None else min(start, limit)

    @property
    def max_log_logit_scale(self) -> float | None:
        """``ln(max_logit_scale)``, the clamp applied to the stored parameter."""
        return None if self.max_logit_scale is None else math.log(self.max_logit_scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClapConfig:
        """Build from `to_dict` output (e.g. ``config.json``).

        Args:
            data: field names to values.

        Returns:
            The config.

        Raises:
            ValueError: if ``data`` lacks a required field or names an unknown one.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in ("audio", "text") if n not in data)
        if unknown or missing:
            raise ValueError(f"bad ClapConfig: unknown fields {unknown}, missing fields {missing}")
        return cls(**data)
