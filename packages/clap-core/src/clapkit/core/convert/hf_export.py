"""Export a clapkit model to a transformers ``ClapModel`` (the inverse of ``convert/hf.py``).

transformers' ``ClapModel`` holds one architecture: an HTSAT audio encoder (log-mel front end of
``ClapFeatureExtractor``) and a RoBERTa text encoder pooled by its pooler, each followed by a
Linear-ReLU-Linear projection. A clapkit model of that shape exports weight for weight; anything
else is refused with what transformers cannot hold.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clapkit.core.convert.common import import_transformers
from clapkit.core.convert.hf import _BLOCK_RENAMES, rename_in_block

__all__ = ["export_transformers", "transformers_blockers"]

# clapkit HTSAT names -> HTS-AT (reference) names -> transformers names
_CLAPKIT_TO_HF_PREFIX = (("log_mel.bn0.", "batch_norm."), ("stages.", "layers."))
_HF_BLOCK_NAMES = {new: old for old, new in _BLOCK_RENAMES.items()}
_QKV = re.compile(r"^(layers\.\d+\.blocks\.\d+\.)attn\.qkv\.(weight|bias)$")
_FEATURE_EXTRACTOR_FILL = ("repeatpad", "repeat", "pad")


def transformers_blockers(model: Any) -> list[str]:
    """What of a clapkit model a transformers ``ClapModel`` cannot hold (empty: it exports).

    Args:
        model: a ``ClapModel``.

    Returns:
        One line per obstacle.
    """
    blockers = []
    audio, text = model.config.audio, model.config.text
    if audio.get("architecture") != "htsat":
        blockers.append(f"audio encoder {audio.get('architecture')!r} (transformers holds HTSAT)")
    if text.get("architecture") != "roberta" or text.get("pooling") != "pooler":
        blockers.append(
            f"text encoder {text.get('architecture')!r} pooled by {text.get('pooling')!r} "
            "(transformers holds RoBERTa pooled by its pooler)"
        )
    if model.config.projection != "mlp":
        blockers.append(
            f"projection {model.config.projection!r} (transformers holds 'mlp': Linear-ReLU-Linear)"
        )
    if audio.get("architecture") == "htsat":
        front = model.frontend
        if front.fill not in _FEATURE_EXTRACTOR_FILL:
            blockers.append(f"front-end fill {front.fill!r} (ClapFeatureExtractor pads by "
                            f"{'/'.join(_FEATURE_EXTRACTOR_FILL)})")  # fmt: skip
        if front.clip_samples % front.sample_rate:
            blockers.append(
                f"a clip of {front.clip_samples / front.sample_rate:g} s "
                "(ClapFeatureExtractor holds whole seconds)"
            )
        if front.win_length != front.n_fft:
            blockers.append(f"window {front.win_length} != n_fft {front.n_fft}")
        if front.filterbank_rate not in (None, front.sample_rate):
            blockers.append(
                f"a mel filterbank designed for {front.filterbank_rate} Hz audio at "
                f"{front.sample_rate} Hz (ClapFeatureExtractor designs it at the audio's rate)"
            )
    return blockers


def _audio_state(encoder: Any) -> dict[str, Tensor]:
    """The HTSAT encoder's weights under transformers' ``ClapAudioEncoder`` names."""
    out: dict[str, Tensor] = {}
    dropped = []
    for key, value in encoder.state_dict().items():
        if key.startswith("head."):
            dropped.append(key)
            continue
        for old, new in _CLAPKIT_TO_HF_PREFIX:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        match = _QKV.match(key)
        if match:
            for part, chunk in zip(("query", "key", "value"), value.chunk(3), strict=True):
                out[f"{match.group(1)}attention.self.{part}.{match.group(2)}"] = chunk.clone()
            continue
        out[rename_in_block(key, _HF_BLOCK_NAMES)] = value
    if dropped:
        warnings.warn(
            f"the audio encoder's classifier head ({', '.join(dropped)}) is not exported: "
            "transformers' ClapAudioEncoder has none (CLAP embeddings do not use it)",
            stacklevel=3,
        )
    return out


def _hf_config(model: Any) -> Any:
    transformers = import_transformers()
    audio = model.config.audio
    depths = list(audio["depths"])
    audio_config = transformers.ClapAudioConfig(
        num_mel_bins=model.frontend.n_mels,
        spec_size=audio["spec_size"],
        patch_size=audio["patch_size"],
        patch_stride=audio["patch_stride"],
        patch_embeds_hidden_size=audio["embed_dim"],
        hidden_size=audio["embed_dim"] * 2 ** (len(depths) - 1),
        depths=depths,
        num_attention_heads=list(audio["num_heads"]),
        window_size=audio["window_size"],
        mlp_ratio=audio["mlp_ratio"],
        qkv_bias=audio.get("qkv_bias", True),
        enable_fusion=False,
    )
    text_config = dict(model.config.text["model_config"])
    for key in ("architectures", "model_type", "transformers_version", "_name_or_path"):
        text_config.pop(key, None)
    return transformers.ClapConfig(
        text_config=transformers.ClapTextConfig(**text_config).to_dict(),
        audio_config=audio_config.to_dict(),
        projection_dim=model.config.projection_dim,
        projection_hidden_act="relu",
    )


def _feature_extractor(model: Any) -> Any:
    front = model.frontend
    return import_transformers().ClapFeatureExtractor(
        feature_size=front.n_mels,
        sampling_rate=front.sample_rate,
        hop_length=front.hop_length,
        fft_window_size=front.n_fft,
        max_length_s=front.clip_samples // front.sample_rate,
        padding=front.fill,
        truncation="rand_trunc",
        frequency_min=front.fmin,
        frequency_max=front.fmax,
        return_attention_mask=False,
    )


def export_transformers(model: Any, save_directory: str | os.PathLike[str] | None = None) -> Any:
    """A transformers ``ClapModel`` holding a clapkit model's weights, saved when asked.

    The multiplier of both of transformers' logit scales is clapkit's effective one (after the
    clamp). Saved folders hold ``config.json``, ``model.safetensors``,
    ``preprocessor_config.json`` (``ClapFeatureExtractor``: rate, FFT, hop, mel bins and band,
    clip length, fill) and the tokenizer, so ``transformers.pipeline(
    "zero-shot-audio-classification", model=folder)`` runs it.

    Args:
        model: a ``ClapModel`` with an HTSAT audio encoder, a RoBERTa text encoder pooled by its
            pooler and ``"mlp"`` projections.
        save_directory: a folder to write, or ``None``.

    Returns:
        The transformers ``ClapModel`` (eval mode, on the CPU).

    Raises:
        ValueError: naming everything of the model that transformers cannot hold.
    """
    blockers = transformers_blockers(model)
    if blockers:
        raise ValueError("transformers' ClapModel cannot hold this model: " + "; ".join(blockers))
    transformers = import_transformers()
    hf_model = transformers.ClapModel(_hf_config(model)).eval()
    state: dict[str, Tensor] = {}
    parts = {
        "audio_model.audio_encoder.": _audio_state(model.audio_encoder),
        "text_model.": model.text_encoder.model.state_dict(),
        "audio_projection.": model.audio_projection.state_dict(),
        "text_projection.": model.text_projection.state_dict(),
    }
    for prefix, part in parts.items():
        state.update({prefix + k: v.detach().cpu() for k, v in part.items()})
    scale = torch.log(model.logit_scale_exp.detach().cpu().float()).reshape(())
    state["logit_scale_a"] = state["logit_scale_t"] = scale
    own = hf_model.state_dict()
    for key, value in own.items():  # constant index buffers clapkit rebuilds instead of storing
        if key not in state and key.endswith(("relative_position_index", "position_ids",
                                              "token_type_ids")):  # fmt: skip
            state[key] = value
    hf_model.load_state_dict(state, strict=True)
    if save_directory is not None:
        folder = Path(save_directory)
        hf_model.save_pretrained(folder)
        _feature_extractor(model).save_pretrained(folder)
        model.text_encoder.save_tokenizer(folder)
    return hf_model
