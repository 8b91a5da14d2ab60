"""The typed configuration of a `ClapCaptioner`, written to ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from clapkit.caption.mappers import MapperConfig

CAPTIONER_FORMAT = "clapkit-captioner/1"
PROJECTIONS = ("msclap", "mlp", "linear")


@dataclass
class CaptionerConfig:
    """Everything needed to rebuild a `ClapCaptioner` (random weights) before loading weights.

    Args:
        audio: the audio encoder's ``get_config()`` (``clapkit.audio.build_audio_encoder``).
        mapper: the mapper's ``get_config()`` (:class:`~clapkit.caption.mappers.MapperConfig`).
        language_model: the language model's transformers config dict (``config.to_dict()``,
            with ``model_type``; GPT2 for every released model).
        projection: the CLAP audio projection (``clapkit.core.build_projection`` kind), or
            ``None`` to feed the encoder embedding to the mapper directly.
        projection_dim: output size of the projection.
        projection_dropout: dropout of an ``"msclap"`` projection.
        normalize_embedding: L2-normalise the audio embedding before the mapper (msclap: yes).
        freeze_audio: keep the audio encoder and projection fixed (and in eval mode) in training.
        freeze_language_model: keep the language model fixed (and in eval mode) in training.
        format: version tag of this layout.

    Raises:
        ValueError: on an unknown projection, a mapper whose sizes do not fit, or a bad format.
    """

    audio: dict[str, Any]
    mapper: dict[str, Any]
    language_model: dict[str, Any]
    projection: str | None = "msclap"
    projection_dim: int = 1024
    projection_dropout: float = 0.5
    normalize_embedding: bool = True
    freeze_audio: bool = True
    freeze_language_model: bool = True
    format: str = field(default=CAPTIONER_FORMAT)

    def __post_init__(self) -> None:
        if self.projection is not None and self.projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {self.projection!r}; use one of {PROJECTIONS}")
        if self.format != CAPTIONER_FORMAT:
            raise ValueError(
                f"unsupported config format {self.format!r}; expected {CAPTIONER_FORMAT}"
            )
        if "model_type" not in self.language_model:
            raise ValueError("language_model must be a transformers config dict with 'model_type'")
        mapper = MapperConfig.from_dict(self.mapper)
        width = self.language_model.get("n_embd", self.language_model.get("hidden_size"))
        if width is not None and mapper.width != width:
            raise ValueError(f"mapper width {mapper.width} != language model width {width}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionerConfig:
        """Build from `to_dict` output.

        Raises:
            ValueError: naming unknown or missing fields.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in ("audio", "mapper", "language_model") if n not in data)
        if unknown or missing:
            raise ValueError(f"bad CaptionerConfig: unknown fields {unknown}, missing {missing}")
        return cls(**data)
