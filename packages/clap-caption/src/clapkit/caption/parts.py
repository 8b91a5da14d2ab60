"""The parts of a captioner built on a `ClapModel` or as msclap's clapcap (random weights).

These return the config and the built modules; ``ClapCaptioner`` assembles them, so this
module never imports the captioner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import GPT2Config, PreTrainedModel

from clapkit.audio import htsat_msclap_2023
from clapkit.caption.config import CaptionerConfig
from clapkit.caption.language_model import (
    LanguageModelLike,
    language_model_width,
    resolve_language_model,
)
from clapkit.caption.mappers import MapperConfig, build_mapper, clapcap_mapper, transformer_mapper
from clapkit.core import ClapModel

__all__ = ["CaptionerParts", "clap_parts", "clapcap_2023_parts"]


@dataclass(frozen=True)
class CaptionerParts:
    """A captioner's config and its built modules.

    Attributes:
        config: the captioner config.
        audio_encoder: the audio encoder.
        audio_projection: the audio projection (``None``: rebuilt from the config).
        mapper: the mapper.
        language_model: the causal LM.
    """

    config: CaptionerConfig
    audio_encoder: Any
    audio_projection: nn.Module | None
    mapper: nn.Module
    language_model: PreTrainedModel


def clap_parts(
    clap: ClapModel,
    *,
    language_model: LanguageModelLike = "gpt2",
    mapper: nn.Module | MapperConfig | None = None,
    normalize_embedding: bool = True,
    freeze_audio: bool = True,
    freeze_language_model: bool = True,
) -> CaptionerParts:
    """The parts of a captioner on the audio side (encoder + projection) of a ``ClapModel``.

    The audio modules are shared with ``clap``, not copied.

    Args:
        clap: the CLAP model (its ``audio_encoder``, ``audio_projection`` and ``config``).
        language_model: a causal LM, a transformers config (random init) or a hub id/folder
            (pretrained; the paper uses GPT2 base).
        mapper: a mapper module or config; default: the clapcap transformer mapper sized to the
            projection and the language model (40 prefix tokens, 8 layers, 8 heads).
        normalize_embedding: L2-normalise the audio embedding before the mapper.
        freeze_audio: train without the audio side.
        freeze_language_model: train without the language model (the paper: frozen).

    Returns:
        The parts.

    Raises:
        ValueError: when the mapper's sizes do not fit the projection or the language model.
    """
    lm = resolve_language_model(language_model)
    if mapper is None:
        mapper = transformer_mapper(
            embed_dim=clap.config.projection_dim, width=language_model_width(lm)
        )
    elif isinstance(mapper, MapperConfig):
        mapper = build_mapper(mapper)
    mapper_config = MapperConfig.from_dict(mapper.get_config())  # type: ignore[operator]
    if mapper_config.embed_dim != clap.config.projection_dim:
        raise ValueError(
            f"mapper takes {mapper_config.embed_dim}-d embeddings, the CLAP projection gives "
            f"{clap.config.projection_dim}"
        )
    config = CaptionerConfig(
        audio=clap.audio_encoder.get_config(),
        mapper=mapper_config.to_dict(),
        language_model=lm.config.to_dict(),
        projection=clap.config.projection,
        projection_dim=clap.config.projection_dim,
        projection_dropout=clap.config.projection_dropout,
        normalize_embedding=normalize_embedding,
        freeze_audio=freeze_audio,
        freeze_language_model=freeze_language_model,
    )
    return CaptionerParts(
        config=config,
        audio_encoder=clap.audio_encoder,
        audio_projection=clap.audio_projection,
        mapper=mapper,
        language_model=lm,
    )


def clapcap_2023_parts(
    *, language_model: LanguageModelLike | None = None, **flags: Any
) -> CaptionerParts:
    """msclap's clapcap architecture (``clapcap_weights_2023.pth``) with random weights.

    HTSAT with the msclap 2023 front end, msclap projection 768 -> 1024, the clapcap transformer
    mapper (40 x 768 prefix) and GPT2 base (Elizalde et al., 2023, arXiv 2309.05767).

    Args:
        language_model: default a random GPT2 base (``GPT2Config()``); or a model, a config or
            a hub id/folder (e.g. pretrained ``"gpt2"``).
        **flags: ``normalize_embedding``, ``freeze_audio``, ``freeze_language_model``.

    Returns:
        The parts (the projection is built from the config).
    """
    encoder = htsat_msclap_2023()
    lm = resolve_language_model(language_model if language_model is not None else GPT2Config())
    mapper = clapcap_mapper()
    config = CaptionerConfig(
        audio=encoder.get_config(),
        mapper=mapper.get_config(),
        language_model=lm.config.to_dict(),
        projection="msclap",
        projection_dim=1024,
        **flags,
    )
    return CaptionerParts(
        config=config,
        audio_encoder=encoder,
        audio_projection=None,
        mapper=mapper,
        language_model=lm,
    )
