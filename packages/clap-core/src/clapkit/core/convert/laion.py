"""Convert LAION-CLAP checkpoints (``630k-best.pt``, ``music_audioset_epoch_15_esc_90.14.pt``)."""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor

from clapkit.core.convert.common import (
    ConvertedClap,
    converted_clap,
    load_audio_weights,
    text_model_config,
)
from clapkit.core.registry import import_encoder_package
from clapkit.core.state_dict import (
    check_consumed,
    checkpoint_error,
    drop_harmless_buffers,
    load_checkpoint,
    load_strict,
    split_prefix,
    strip_prefix,
)

__all__ = ["LAION_AUDIO_ENCODERS", "LAION_TEXT_ENCODERS", "convert_laion"]

# name -> (clapkit.audio component builder, its size arguments)
LAION_AUDIO_ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "htsat-tiny": ("htsat_encoder", {"embed_dim": 96, "depths": (2, 2, 6, 2)}),
    "htsat-base": ("htsat_encoder", {"embed_dim": 128, "depths": (2, 2, 12, 2)}),
    "cnn14": ("cnn14_encoder", {}),
}
# name -> (clapkit.text builder, transformers kind, default tokenizer)
LAION_TEXT_ENCODERS: dict[str, tuple[str, str, str]] = {
    "roberta": ("roberta", "roberta", "roberta-base"),
    "bert": ("bert", "bert", "bert-base-uncased"),
}
# Parts of a LAION checkpoint that never contribute to an embedding: the second logit scale
# and the "transform" MLPs serve only LAION's optional mlp_loss training objective.
_TRAINING_ONLY = ("logit_scale_t", "audio_transform.", "text_transform.")
_FUSION_MARKERS = ("fusion_model.", "mel_conv2d.")


def _mlp_projection(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """LAION's ``Sequential(Linear, ReLU, Linear)`` indices 0/2 -> ``linear1``/``linear2``."""
    names = {"0.": "linear1.", "2.": "linear2."}
    return {names.get(k[:2], "?") + k[2:]: v for k, v in state.items()}


def convert_laion(
    path: str | os.PathLike[str],
    *,
    audio: str = "htsat-tiny",
    text: str = "roberta",
    tokenizer: Any = None,
    text_config: Any = None,
    max_length: int = 77,
) -> ConvertedClap:
    """Convert a LAION-CLAP checkpoint (``state_dict`` entry; DDP ``module.`` prefixes removed).

    The front end is LAION's: 48 kHz, 1024/480, 64 mel, 50-14000 Hz, 10 s clips filled with
    "repeatpad". Text embeddings use RoBERTa's ``pooler_output`` as LAION does. Every key is
    accounted for: the audio loader checks and drops STFT kernels and ``melW``; ``position_ids``
    buffers are dropped by name; ``logit_scale_t``, ``audio_transform.*`` and
    ``text_transform.*`` are dropped by name because they serve only LAION's optional
    ``mlp_loss`` training objective (zero-shot uses ``logit_scale_a``, kept as ``logit_scale``);
    anything else fails the load, named. Fusion checkpoints (4-channel ``fusion_model``
    patch embedding) are refused with a clear error.

    Args:
        path: the ``.pt`` file (read with ``weights_only=True``) or a ``.safetensors`` copy.
        audio: ``"htsat-tiny"``, ``"htsat-base"`` or ``"cnn14"`` (LAION's PANN-14).
        text: ``"roberta"`` or ``"bert"``.
        tokenizer: tokenizer object, hub id or folder; default the hub's ``roberta-base``.
        text_config: a transformers config for the text model; default: read from the weights.
        max_length: longest token sequence (LAION: 77).

    Returns:
        Config, clapkit-named state dict and tokenizer, for ``ClapModel.from_converted``.

    Raises:
        ValueError: for an unknown ``audio``/``text`` name.
        clapkit.audio.CheckpointError: for an unsafe/unreadable file, a fusion checkpoint or
            keys that do not fit, by name.
    """
    if audio not in LAION_AUDIO_ENCODERS:
        raise ValueError(
            f"unknown LAION audio encoder {audio!r}; choose one of {sorted(LAION_AUDIO_ENCODERS)}"
        )
    if text not in LAION_TEXT_ENCODERS:
        raise ValueError(
            f"unknown LAION text encoder {text!r}; choose one of {sorted(LAION_TEXT_ENCODERS)}"
        )
    source = os.fspath(path)
    state = strip_prefix(load_checkpoint(path), "module.")
    fusion = sorted(k for k in state if any(marker in k for marker in _FUSION_MARKERS))
    if fusion:
        raise checkpoint_error(
            f"{source} is a LAION fusion checkpoint ({fusion[0]}, ... {len(fusion)} fusion keys): "
            "feature fusion is not supported by clapkit; use a non-fusion checkpoint such as "
            "630k-best.pt or 630k-audioset-best.pt"
        )
    logit_scale = state.pop("logit_scale_a", None)
    for prefix in _TRAINING_ONLY:
        split_prefix(state, prefix)
    audio_state = split_prefix(state, "audio_branch.")
    text_state = drop_harmless_buffers(split_prefix(state, "text_branch."))
    audio_projection = _mlp_projection(split_prefix(state, "audio_projection."))
    text_projection = _mlp_projection(split_prefix(state, "text_projection."))
    check_consumed(state, source)
    if logit_scale is None or not audio_state or not text_state:
        raise checkpoint_error(
            f"{source} is not a LAION-CLAP checkpoint: it needs logit_scale_a, audio_branch.* "
            "and text_branch.* keys"
        )

    audio_lib = import_encoder_package("clapkit.audio")
    text_lib = import_encoder_package("clapkit.text")
    builder, sizes = LAION_AUDIO_ENCODERS[audio]
    audio_encoder = getattr(audio_lib, builder)(
        frontend=audio_lib.LAION_FRONTEND, num_classes=0, **sizes
    )  # CLAP reads the embedding only: the file's classifier is dropped by name
    load_audio_weights(audio_lib, audio_encoder, audio_state, source=source, prefix="audio_branch.")
    text_builder, kind, default_tokenizer = LAION_TEXT_ENCODERS[text]
    text_encoder = getattr(text_lib, text_builder)(
        config=text_config or text_model_config(kind, text_state, source),
        tokenizer=tokenizer if tokenizer is not None else default_tokenizer,
        pooling="pooler",
        max_length=max_length,
    )
    load_strict(text_encoder.model, text_state, source=source, prefix="text_branch.")
    return converted_clap(
        audio_encoder=audio_encoder,
        text_encoder=text_encoder,
        projection="mlp",
        audio_projection=audio_projection,
        text_projection=text_projection,
        logit_scale=logit_scale,
        source=source,
    )
