"""Building captioners: on a ClapModel's audio side, or the clapcap architecture from scratch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, PretrainedConfig, PreTrainedModel

from clapkit.caption.captioner import ClapCaptioner, build_language_model
from clapkit.caption.config import CaptionerConfig
from clapkit.caption.mappers import MapperConfig, build_mapper, clapcap_mapper, transformer_mapper
from clapkit.caption.tokenizer import TokenizerLike
from clapkit.core import ClapModel


def _language_model(language_model: PreTrainedModel | PretrainedConfig | str) -> PreTrainedModel:
    if isinstance(language_model, PreTrainedModel):
        return language_model
    if isinstance(language_model, PretrainedConfig):
        return build_language_model(language_model.to_dict())
    return AutoModelForCausalLM.from_pretrained(language_model)


def _width(language_model: PreTrainedModel) -> int:
    weight = language_model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    return int(weight.shape[1])


def from_clap(
    clap: ClapModel,
    *,
    tokenizer: TokenizerLike,
    language_model: PreTrainedModel | PretrainedConfig | str = "gpt2",
    mapper: nn.Module | MapperConfig | None = None,
    normalize_embedding: bool = True,
    freeze_audio: bool = True,
    freeze_language_model: bool = True,
) -> ClapCaptioner:
    """A captioner on the audio side (encoder + projection) of a ``clapkit.core.ClapModel``.

    The audio modules are shared with ``clap``, not copied.

    Args:
        clap: a ``ClapModel`` (its ``audio_encoder``, ``audio_projection`` and ``config``).
        tokenizer: the language model's tokenizer (object, folder or hub id).
        language_model: a causal LM, a transformers config (random init) or a hub id/folder
            (pretrained; the paper uses GPT2 base).
        mapper: a mapper module or config; default: the clapcap transformer mapper sized to the
            projection and the language model (40 prefix tokens, 8 layers, 8 heads).
        normalize_embedding: L2-normalise the audio embedding before the mapper.
        freeze_audio: train without the audio side.
        freeze_language_model: train without the language model (the paper: frozen).

    Returns:
        The captioner.

    Raises:
        ValueError: when the mapper's sizes do not fit the projection or the language model.
    """
    lm = _language_model(language_model)
    width = _width(lm)
    if mapper is None:
        mapper = transformer_mapper(embed_dim=clap.config.projection_dim, width=width)
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
    return ClapCaptioner(
        config,
        tokenizer=tokenizer,
        audio_encoder=clap.audio_encoder,
        audio_projection=clap.audio_projection,
        mapper=mapper,
        language_model=lm,
    )


def clapcap_2023(
    *,
    tokenizer: TokenizerLike = "gpt2",
    language_model: PreTrainedModel | PretrainedConfig | str | None = None,
    **flags: Any,
) -> ClapCaptioner:
    """msclap's clapcap architecture (``clapcap_weights_2023.pth``) with random weights.

    HTSAT with the msclap 2023 front end, msclap projection 768 -> 1024, the clapcap transformer
    mapper (40 x 768 prefix) and GPT2 base (Elizalde et al., 2023, arXiv 2309.05767).

    Args:
        tokenizer: GPT2 tokenizer (object, folder or hub id).
        language_model: default a random GPT2 base (``GPT2Config()``); or a model, a config or
            a hub id/folder (e.g. pretrained ``"gpt2"``).
        **flags: ``normalize_embedding``, ``freeze_audio``, ``freeze_language_model``.

    Returns:
        The captioner.
    """
    from clapkit.audio import htsat_msclap_2023

    encoder = htsat_msclap_2023()
    lm = _language_model(language_model if language_model is not None else GPT2Config())
    mapper = clapcap_mapper()
    config = CaptionerConfig(
        audio=encoder.get_config(),
        mapper=mapper.get_config(),
        language_model=lm.config.to_dict(),
        projection="msclap",
        projection_dim=1024,
        **flags,
    )
    return ClapCaptioner(
        config, tokenizer=tokenizer, audio_encoder=encoder, mapper=mapper, language_model=lm
    )
