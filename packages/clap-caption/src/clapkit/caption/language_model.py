"""The captioner's causal language model: built from a config, a model or a hub id/folder."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

__all__ = [
    "LanguageModelLike",
    "build_language_model",
    "language_model_width",
    "resolve_language_model",
]

LanguageModelLike = PreTrainedModel | PretrainedConfig | str


def build_language_model(config: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialised causal LM from its transformers config dict (with model_type).

    Args:
        config: ``PretrainedConfig.to_dict()`` output.

    Returns:
        The model.
    """
    values = dict(config)
    lm_config = AutoConfig.for_model(values.pop("model_type"), **values)
    return AutoModelForCausalLM.from_config(lm_config)


def resolve_language_model(language_model: LanguageModelLike) -> PreTrainedModel:
    """A causal LM from a model (as is), a config (random init) or a hub id / folder.

    Args:
        language_model: the model, its config, or where to load it from (pretrained).

    Returns:
        The model.
    """
    if isinstance(language_model, PreTrainedModel):
        return language_model
    if isinstance(language_model, PretrainedConfig):
        return build_language_model(language_model.to_dict())
    return AutoModelForCausalLM.from_pretrained(language_model)


def language_model_width(language_model: PreTrainedModel) -> int:
    """Width of the LM's token embeddings (the mapper's prefix width)."""
    weight = language_model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    return int(weight.shape[1])
