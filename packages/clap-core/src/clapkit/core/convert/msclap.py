"""Convert Microsoft CLAP (msclap) checkpoints: ``CLAP_weights_2022.pth`` / ``_2023.pth``.

msclap's wrapper key layout is known here and only here: the audio side
``<wrapper>base[.htsat].*`` + ``<wrapper>projection.*`` (wrapper ``audio_encoder.`` in the CLAP
files, ``clap.`` in ``clapcap_weights_2023.pth``, whose converter in ``clapkit.caption`` uses
`split_msclap_audio`), the text side ``caption_encoder.base.*`` + ``caption_encoder.projection.*``
and ``logit_scale``. The audio encoder's inner key names are ``clapkit.audio``'s business.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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

__all__ = [
    "MSCLAP_AUDIO_PREFIX",
    "MSCLAP_TEXT_PREFIX",
    "MSCLAP_VERSIONS",
    "MsclapAudio",
    "convert_msclap",
    "split_msclap_audio",
]

MSCLAP_AUDIO_PREFIX = "audio_encoder."
MSCLAP_TEXT_PREFIX = "caption_encoder."
_BASE, _PROJECTION = "base.", "projection."
# version -> (clapkit.audio preset, audio keys below the wrapper, clapkit.text builder,
#             transformers kind, max tokens, default tokenizer)
MSCLAP_VERSIONS: dict[str, tuple[str, str, str, str, int, str]] = {
    "2022": ("cnn14_msclap_2022", "base.", "bert", "bert", 100, "bert-base-uncased"),
    "2023": ("htsat_msclap_2023", "base.htsat.", "gpt2_eot", "gpt2", 77, "gpt2"),
}


@dataclass(frozen=True)
class MsclapAudio:
    """msclap's audio side (encoder + projection) in clapkit's terms.

    Attributes:
        config: the audio encoder's ``get_config()`` (the msclap preset of the version).
        encoder_state: the encoder's state dict, clapkit names.
        projection_state: the ``"msclap"`` projection's state dict (``linear1``, ``linear2``,
            ``layer_norm``; msclap's names are clapkit's).
        encoder: the loaded encoder itself.
    """

    config: dict[str, Any]
    encoder_state: dict[str, Tensor]
    projection_state: dict[str, Tensor]
    encoder: Any


def _check_version(version: str) -> tuple[str, str, str, str, int, str]:
    if version not in MSCLAP_VERSIONS:
        raise ValueError(
            f"unknown msclap version {version!r}; choose one of {sorted(MSCLAP_VERSIONS)} "
            "(captioning checkpoints load with clapkit.caption)"
        )
    return MSCLAP_VERSIONS[version]


def split_msclap_audio(
    state: dict[str, Tensor], *, prefix: str, version: str = "2023", source: str
) -> MsclapAudio:
    """Pop msclap's audio side out of ``state`` and load it into the version's audio preset.

    Args:
        state: the checkpoint's tensors; the ``<prefix>base.*`` and ``<prefix>projection.*``
            keys are removed from it (the rest is the caller's).
        prefix: msclap's audio wrapper in this file: ``"audio_encoder."`` (CLAP) or
            ``"clap."`` (clapcap).
        version: ``"2022"`` (CNN14) or ``"2023"`` (HTSAT).
        source: the file, for error messages.

    Returns:
        The encoder config, its state dict and the projection's state dict.

    Raises:
        ValueError: for an unknown version.
        clapkit.audio.CheckpointError: when the audio keys are missing or do not fit, by name.
        ImportError: when ``clapkit.audio`` is not installed.
    """
    preset, below = _check_version(version)[:2]
    audio_state = split_prefix(state, prefix + below)
    projection_state = split_prefix(state, prefix + _PROJECTION)
    if not audio_state:
        raise checkpoint_error(f"{source}: no {prefix}{below}* keys (msclap {version} audio)")
    audio_lib = import_encoder_package("clapkit.audio")
    encoder = getattr(audio_lib, preset)(num_classes=0)  # CLAP reads the embedding only
    load_audio_weights(audio_lib, encoder, audio_state, source=source, prefix=prefix + below)
    return MsclapAudio(
        config=encoder.get_config(),
        encoder_state=encoder.state_dict(),
        projection_state=projection_state,
        encoder=encoder,
    )


def convert_msclap(
    path: str | os.PathLike[str],
    version: str = "2023",
    tokenizer: Any = None,
    *,
    text_config: Any = None,
) -> ConvertedClap:
    """Convert an msclap checkpoint (a dict whose ``model`` entry is the state dict).

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
        Config, clapkit-named state dict and tokenizer, for ``ClapModel.from_converted``.

    Raises:
        ValueError: for an unknown version.
        clapkit.audio.CheckpointError: for an unsafe/unreadable file or keys that do not fit,
            by name.
    """
    _, below, text_builder, kind, max_length, default_tok = _check_version(version)
    source = os.fspath(path)
    state = strip_prefix(load_checkpoint(path), "module.")
    logit_scale = state.pop("logit_scale", None)
    has_audio = any(k.startswith(MSCLAP_AUDIO_PREFIX + below) for k in state)
    text_state = drop_harmless_buffers(split_prefix(state, MSCLAP_TEXT_PREFIX + _BASE))
    text_projection = split_prefix(state, MSCLAP_TEXT_PREFIX + _PROJECTION)
    missing = [
        name
        for name, found in (
            ("logit_scale", logit_scale is not None),
            (f"{MSCLAP_AUDIO_PREFIX}{below}*", has_audio),
            (f"{MSCLAP_TEXT_PREFIX}{_BASE}*", bool(text_state)),
        )
        if not found
    ]
    if missing:
        raise checkpoint_error(f"{source} is not an msclap {version} checkpoint: no {missing}")
    assert logit_scale is not None
    other = {k: v for k, v in state.items() if not k.startswith(MSCLAP_AUDIO_PREFIX)}
    check_consumed(other, source)
    audio = split_msclap_audio(state, prefix=MSCLAP_AUDIO_PREFIX, version=version, source=source)
    check_consumed(state, source)

    text_lib = import_encoder_package("clapkit.text")
    text_kwargs: dict[str, Any] = {
        "config": text_config or text_model_config(kind, text_state, source),
        "tokenizer": tokenizer if tokenizer is not None else default_tok,
        "max_length": max_length,
    }
    if kind == "bert":
        text_kwargs["pooling"] = "cls"
    text_encoder = getattr(text_lib, text_builder)(**text_kwargs)
    load_strict(text_encoder.model, text_state, source=source, prefix=MSCLAP_TEXT_PREFIX + _BASE)
    return converted_clap(
        audio_encoder=audio.encoder,
        text_encoder=text_encoder,
        projection="msclap",
        audio_projection=audio.projection_state,
        text_projection=text_projection,
        logit_scale=logit_scale,
        source=source,
    )
