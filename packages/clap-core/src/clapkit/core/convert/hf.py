"""Convert a transformers ``ClapModel`` (object or saved folder) into clapkit."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from torch import Tensor

from clapkit.core.convert.common import (
    ConvertedClap,
    converted_clap,
    import_transformers,
    load_audio_weights,
)
from clapkit.core.registry import import_encoder_package
from clapkit.core.state_dict import (
    check_consumed,
    checkpoint_error,
    drop_harmless_buffers,
    load_checkpoint,
    load_strict,
    split_prefix,
)

__all__ = ["convert_transformers", "frontend_from_feature_extractor", "hf_audio_to_reference"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_FILES = [
    "config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
    "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
]  # fmt: skip
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
_ROBERTA_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
    "bos_token_id", "eos_token_id",
)  # fmt: skip
# HF Swin block names -> HTS-AT names (the qkv projections are concatenated separately)
_BLOCK_RENAMES = {
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
    "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
    "attention.self.relative_position_index": "attn.relative_position_index",
    "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
}
_QKV = re.compile(r"(layers\.\d+\.blocks\.\d+\.)attention\.self\.(query|key|value)\.(weight|bias)$")


def rename_in_block(name: str, renames: dict[str, str]) -> str:
    """Rename the part of a Swin block key after ``layers.i.blocks.j.`` by its first match.

    Args:
        name: a weight name.
        renames: old prefix -> new prefix, inside a block.

    Returns:
        The renamed key (unchanged outside blocks or without a match).
    """
    block = re.match(r"layers\.\d+\.blocks\.\d+\.", name)
    if block:
        head, rest = block.group(0), name[block.end() :]
        for old, new in renames.items():
            if rest.startswith(old):
                return head + new + rest[len(old) :]
    return name


def hf_audio_to_reference(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename transformers ``ClapAudioEncoder`` weights to HTS-AT (LAION) names.

    ``query``/``key``/``value`` are concatenated into ``attn.qkv``; ``batch_norm`` is ``bn0``.

    Args:
        state: keys below ``audio_model.audio_encoder.``.

    Returns:
        HTS-AT-named tensors (unknown keys are passed through unchanged, to be reported).
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _QKV.match(key)
        if match:
            qkv.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
            continue
        name = key.replace("batch_norm.", "bn0.", 1) if key.startswith("batch_norm.") else key
        out[rename_in_block(name, _BLOCK_RENAMES)] = value
    for (block, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise checkpoint_error(
                f"{block}attention.self has only {sorted(parts)} of q/k/v {kind}"
            )
        out[f"{block}attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def frontend_from_feature_extractor(
    settings: dict[str, Any] | None, audio_lib: Any, n_mels: int = 64
) -> Any:
    """The ``FrontendConfig`` of a ``ClapFeatureExtractor`` config (or LAION's when ``None``).

    Args:
        settings: the contents of ``preprocessor_config.json``, or ``None``.
        audio_lib: the ``clapkit.audio`` module.
        n_mels: mel bins of the model (``audio_config.num_mel_bins``), used without settings.

    Returns:
        A ``FrontendConfig``.
    """
    laion = audio_lib.LAION_FRONTEND
    if not settings:
        return dataclasses.replace(laion, n_mels=n_mels)
    rate = int(settings.get("sampling_rate", laion.sample_rate))
    return audio_lib.FrontendConfig(
        sample_rate=rate,
        n_fft=int(settings.get("fft_window_size", laion.n_fft)),
        win_length=int(settings.get("fft_window_size", laion.win_length)),
        hop_length=int(settings.get("hop_length", laion.hop_length)),
        n_mels=int(settings.get("feature_size", laion.n_mels)),
        fmin=float(settings.get("frequency_min", laion.fmin)),
        fmax=float(settings.get("frequency_max", laion.fmax)),
        clip_seconds=int(settings.get("nb_max_samples", laion.clip_samples)) / rate,
        fill=settings.get("padding", laion.fill),
    )


def _looks_like_repo_id(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None


def _read_folder(path: Path) -> tuple[dict[str, Tensor], dict[str, Any], Path]:
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), None)
        if weights is None:
            raise checkpoint_error(f"{folder} holds none of {list(_WEIGHT_FILES)}")
    else:
        weights = path
    state = load_checkpoint(weights)  # safetensors, or torch.load(weights_only=True)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise checkpoint_error(f"{weights}: no config.json beside it (the ClapConfig is needed)")
    return state, json.loads(config_file.read_text()), folder


def convert_transformers(
    model_or_path: Any,
    *,
    tokenizer: Any = None,
    frontend: Any = None,
    max_length: int | None = None,
) -> ConvertedClap:
    """Convert a transformers ``ClapModel`` (LAION HTSAT + RoBERTa) into a clapkit model.

    Accepts the model object or a folder saved by ``save_pretrained`` (``config.json`` and
    ``model.safetensors``, or ``pytorch_model.bin`` read with ``weights_only=True``). The audio
    front end comes from ``preprocessor_config.json`` when the folder has one, else LAION's
    (48 kHz, 1024/480, 64 mel, 50-14000 Hz, 10 s, "repeatpad"; note ``ClapFeatureExtractor``'s
    own default ``frequency_min`` is 0). ``position_ids``/``token_type_ids`` buffers are dropped
    by name; ``logit_scale_t`` is dropped (zero-shot over audio uses ``logit_scale_a``); any
    other unknown key fails the load, named. Fusion models are refused.

    Args:
        model_or_path: a ``transformers.ClapModel``, a folder / weights file path, or a hub id
            (only safetensors weights are fetched from the hub).
        tokenizer: tokenizer object, hub id or folder; default: the folder's own, else required.
        frontend: a ``clapkit.audio.FrontendConfig`` overriding the above.
        max_length: longest token sequence; default the model's positions minus 2 (512).

    Returns:
        Config, clapkit-named state dict and tokenizer, for ``ClapModel.from_converted``.

    Raises:
        clapkit.audio.CheckpointError: unsafe or unreadable weights, fusion, or keys that do
            not fit.
        ValueError: without a tokenizer when the folder has none.
    """
    audio_lib = import_encoder_package("clapkit.audio")
    text_lib = import_encoder_package("clapkit.text")
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if (
            isinstance(model_or_path, str)
            and not path.exists()
            and _looks_like_repo_id(model_or_path)
        ):
            path = Path(snapshot_download(repo_id=model_or_path, allow_patterns=_HUB_FILES))
        source = str(path)
        state, config, folder = _read_folder(path)
        preprocessor = folder / "preprocessor_config.json"
        settings = json.loads(preprocessor.read_text()) if preprocessor.is_file() else None
        if tokenizer is None and any((folder / f).is_file() for f in _TOKENIZER_FILES):
            tokenizer = folder
    else:
        source = type(model_or_path).__name__
        state = {k: v.detach() for k, v in model_or_path.state_dict().items()}
        config, settings = model_or_path.config.to_dict(), None
    if tokenizer is None:
        raise ValueError(f"{source}: pass tokenizer= (the RoBERTa tokenizer of this model)")
    audio_config, text_config = config.get("audio_config", {}), config.get("text_config", {})
    if audio_config.get("enable_fusion"):
        raise checkpoint_error(f"{source}: fusion ClapModels are not supported by clapkit")
    if config.get("projection_hidden_act", "relu") != "relu":
        raise checkpoint_error(f"{source}: projection activation must be relu")

    logit_scale = state.pop("logit_scale_a", None)
    state.pop("logit_scale_t", None)
    audio_state = hf_audio_to_reference(split_prefix(state, "audio_model.audio_encoder."))
    text_state = drop_harmless_buffers(split_prefix(state, "text_model."))
    audio_projection = split_prefix(state, "audio_projection.")
    text_projection = split_prefix(state, "text_projection.")
    check_consumed(state, source)
    if logit_scale is None:
        raise checkpoint_error(f"{source}: no logit_scale_a: not a transformers ClapModel")

    patch_stride = audio_config.get("patch_stride", 4)
    audio_encoder = audio_lib.htsat_encoder(
        frontend=frontend
        or frontend_from_feature_extractor(
            settings, audio_lib, audio_config.get("num_mel_bins", 64)
        ),
        spec_size=audio_config.get("spec_size", 256),
        patch_size=audio_config.get("patch_size", 4),
        patch_stride=patch_stride[0] if isinstance(patch_stride, (list, tuple)) else patch_stride,
        embed_dim=audio_config.get("patch_embeds_hidden_size", 96),
        depths=tuple(audio_config.get("depths", (2, 2, 6, 2))),
        num_heads=tuple(audio_config.get("num_attention_heads", (4, 8, 16, 32))),
        window_size=audio_config.get("window_size", 8),
        mlp_ratio=audio_config.get("mlp_ratio", 4.0),
        num_classes=0,  # transformers keeps no classifier head
    )
    load_audio_weights(
        audio_lib, audio_encoder, audio_state, source=source, prefix="audio_model.audio_encoder."
    )

    roberta_config = import_transformers().RobertaConfig(
        **{k: text_config[k] for k in _ROBERTA_FIELDS if k in text_config}
    )
    text_encoder = text_lib.roberta(
        config=roberta_config,
        tokenizer=tokenizer,
        pooling="pooler",
        max_length=max_length or roberta_config.max_position_embeddings - 2,
    )
    load_strict(text_encoder.model, text_state, source=source, prefix="text_model.")
    return converted_clap(
        audio_encoder=audio_encoder,
        text_encoder=text_encoder,
        projection="mlp",
        audio_projection=audio_projection,
        text_projection=text_projection,
        logit_scale=logit_scale,
        source=source,
    )
