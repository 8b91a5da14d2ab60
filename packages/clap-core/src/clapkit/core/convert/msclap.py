"""Load Microsoft CLAP (msclap) checkpoints: ``CLAP_weights_2022.pth`` / ``_2023.pth``."""

from __future__ import annotations

import os
from typing import Any

from clapkit.core.convert.common import assemble, load_audio_weights, text_model_config
from clapkit.core.model import ClapModel
from clapkit.core.registry import import_encoder_package
from clapkit.core.state_dict import (
    CheckpointError,
    check_consumed,
    drop_harmless_buffers,
    load_checkpoint,
    load_strict,
    split_prefix,
    strip_prefix,
)

__all__ = ["MSCLAP_VERSIONS", "from_msclap"]

# version -> (audio preset, audio key prefix, text builder, text kind, max tokens, tokenizer)
MSCLAP_VERSIONS: dict[str, tuple[str, str, str, str, int, str]] = {
    "2022": ("cnn14_msclap_2022", "audio_encoder.base.", "bert", "bert", 100, "bert-base-uncased"),
    "2023": ("htsat_msclap_2023", "audio_encoder.base.htsat.", "gpt2_eot", "gpt2", 77, "gpt2"),
}


def from_msclap(
    path: str | os.PathLike[str],
    version: str = "2023",
    tokenizer: Any = None,
    *,
    text_config: Any = None,
) -> ClapModel:
    """Load an msclap checkpoint (a dict whose ``model`` entry is the state dict).

    2022: CNN14 (44.1 kHz, 5 s, repeat) + BERT (CLS pooling, 100 tokens). 2023: HTSAT with the
    released front end (44.1 kHz audio, HTS-AT's 32 kHz filterbank, 7 s, repeat) + GPT2 pooled
    at the appended " <|endoftext|>" (77 tokens). Projections are msclap's; ``logit_scale`` is
    the trained value. Every key is accounted for: STFT kernels and ``melW`` are checked and
    dropped by the audio loader, the buffers old transformers versions saved
    (``position_ids``, ``attn.bias``, ``attn.masked_bias``) are dropped by name, and any other
    key fails the load, named. Differences from msclap: audio is mixed down to mono (msclap
    concatenates channels), longer audio is embedded whole (msclap: a random crop), and a "!"
    inside a GPT2 text is not mistaken for padding.

    Args:
        path: the ``.pth`` file (read with ``weights_only=True``) or a ``.safetensors`` copy.
        version: ``"2022"`` or ``"2023"`` (``clapcap`` files belong to ``clapkit.caption``).
        tokenizer: tokenizer object, hub id or folder; default the hub's ``bert-base-uncased``
            (2022) or ``gpt2`` (2023).
        text_config: a transformers config for the text model; default: read from the weights.

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: for an unknown version.
        CheckpointError: for an unsafe/unreadable file or keys that do not fit, by name.
    """
    if version not in MSCLAP_VERSIONS:
        raise ValueError(
            f"unknown msclap version {version!r}; choose one of {sorted(MSCLAP_VERSIONS)} "
            "(captioning checkpoints load with clapkit.caption)"
        )
    audio_builder, audio_prefix, text_builder, kind, max_length, default_tok = MSCLAP_VERSIONS[
        version
    ]
    source = os.fspath(path)
    state = strip_prefix(load_checkpoint(path), "module.")
    logit_scale = state.pop("logit_scale", None)
    audio_state = split_prefix(state, audio_prefix)
    audio_projection = split_prefix(state, "audio_encoder.projection.")
    text_state = drop_harmless_buffers(split_prefix(state, "caption_encoder.base."))
    text_projection = split_prefix(state, "caption_encoder.projection.")
    check_consumed(state, source)
    missing = [
        name
        for name, found in (
            ("logit_scale", logit_scale is not None),
            (f"{audio_prefix}*", bool(audio_state)),
            ("caption_encoder.base.*", bool(text_state)),
        )
        if not found
    ]
    if missing:
        raise CheckpointError(f"{source} is not an msclap {version} checkpoint: no {missing}")
    assert logit_scale is not None

    audio_lib = import_encoder_package("clapkit.audio")
    text_lib = import_encoder_package("clapkit.text")
    audio_encoder = getattr(audio_lib, audio_builder)()
    load_audio_weights(audio_lib, audio_encoder, audio_state, source=source, prefix=audio_prefix)
    text_kwargs: dict[str, Any] = {
        "config": text_config or text_model_config(kind, text_state, source),
        "tokenizer": tokenizer if tokenizer is not None else default_tok,
        "max_length": max_length,
    }
    if kind == "bert":
        text_kwargs["pooling"] = "cls"
    text_encoder = getattr(text_lib, text_builder)(**text_kwargs)
    load_strict(text_encoder.model, text_state, source=source, prefix="caption_encoder.base.")
    return assemble(
        audio_encoder=audio_encoder,
        text_encoder=text_encoder,
        projection="msclap",
        audio_projection=audio_projection,
        text_projection=text_projection,
        logit_scale=logit_scale,
        source=source,
    )
