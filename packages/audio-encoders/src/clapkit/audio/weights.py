"""Reading PANNs, HTS-AT, msclap, LAION and clapkit weight files into clapkit encoders, strictly.

Reference files name parameters as the original code does (``conv_block1.conv1.weight``,
``layers.0.blocks.0.attn.qkv.weight``, ``tscam_conv.weight``); :func:`load_reference_state_dict`
maps every key onto a clapkit encoder or drops it by name as a known non-learned tensor.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from clapkit.audio.base import AudioEncoder
from clapkit.audio.config import FrontendConfig
from clapkit.audio.errors import CheckpointError
from clapkit.audio.frontend import mel_filterbank

WeightsSource = str | os.PathLike | Mapping[str, Tensor]
"""A weight file path, or a state dict already in memory (reference or clapkit naming)."""

SAFETENSORS_FORMAT = "clapkit.audio"
"""``format`` entry of the metadata of clapkit safetensors files."""

MEL_TOLERANCE = 1e-4
"""Largest allowed difference between a stored ``melW`` and ours, relative to its peak."""

STFT_KERNELS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
)
MEL_KEY = "logmel_extractor.melW"
_CONSTANT_BUFFER = re.compile(
    r"^layers\.\d+\.blocks\.\d+\.(attn\.relative_position_index|attn_mask)$"
)
_UNUSED_HTSAT = ("head.weight", "head.bias")  # HTS-AT's Linear(527, 527): built, never called


def _cnn14_name(key: str) -> str | None:
    if key.startswith("bn0."):
        return "log_mel." + key
    match = re.match(r"^conv_block(\d+)\.(.+)$", key)
    if match:
        return f"blocks.{int(match.group(1)) - 1}.{match.group(2)}"
    if key.startswith("fc1."):
        return "embed." + key[4:]
    if key.startswith("fc_audioset."):
        return "head." + key[len("fc_audioset.") :]
    return None


def _htsat_name(key: str) -> str | None:
    if key.startswith("bn0."):
        return "log_mel." + key
    if key.startswith("layers."):
        return "stages." + key[len("layers.") :]
    if key.startswith("tscam_conv."):
        return "head." + key[len("tscam_conv.") :]
    if key.startswith(("patch_embed.", "norm.")):
        return key
    return None


_RENAMERS: dict[str, Callable[[str], str | None]] = {"cnn14": _cnn14_name, "htsat": _htsat_name}


def _droppable(architecture: str, key: str) -> bool:
    if key in STFT_KERNELS or key == MEL_KEY:
        return True
    return architecture == "htsat" and (key in _UNUSED_HTSAT or bool(_CONSTANT_BUFFER.match(key)))


def _classifier_key(name: str) -> bool:
    """A clapkit name of the classifier head (``head.*``), the only part after the embedding."""
    return name.startswith("head.")


def _suggest_frontend(stored: Tensor, frontend: FrontendConfig) -> str:
    """Name a common filterbank design that matches ``stored``, if any."""
    n_fft = (stored.shape[0] - 1) * 2
    for rate in (16000, 22050, 32000, 44100, 48000):
        for fmin, fmax in ((50.0, 14000.0), (0.0, rate / 2), (50.0, 8000.0), (0.0, 8000.0)):
            if fmax > rate / 2:
                continue
            candidate = FrontendConfig(
                sample_rate=rate,
                n_fft=n_fft,
                win_length=n_fft,
                n_mels=stored.shape[1],
                fmin=fmin,
                fmax=fmax,
            )
            bank = mel_filterbank(candidate)
            if (bank - stored).abs().max() <= MEL_TOLERANCE * bank.abs().max():
                return (
                    f"; it matches a filterbank designed for {rate} Hz, {fmin:g}-{fmax:g} Hz: "
                    f"build the encoder with filterbank_rate={rate}, fmin={fmin:g}, fmax={fmax:g}"
                    " (for msclap files use cnn14_msclap_2022 / htsat_msclap_2023)"
                )
    return ""


def check_mel_filterbank(stored: Tensor, frontend: FrontendConfig) -> None:
    """Check that a stored torchlibrosa ``melW`` equals the filterbank of ``frontend``.

    Args:
        stored: ``[n_fft // 2 + 1, n_mels]`` from a reference checkpoint.
        frontend: The encoder's front end.

    Raises:
        CheckpointError: On a shape or value mismatch, naming the design the file matches when it
            is a common one.
    """
    ours = mel_filterbank(frontend)
    stored = stored.detach().to("cpu", torch.float32)
    if stored.shape != ours.shape:
        raise CheckpointError(
            f"{MEL_KEY} has shape {tuple(stored.shape)} but the encoder's front end "
            f"(n_fft={frontend.n_fft}, n_mels={frontend.n_mels}) gives {tuple(ours.shape)}"
        )
    error = (stored - ours).abs().max().item()
    if error > MEL_TOLERANCE * ours.abs().max().item():
        raise CheckpointError(
            f"{MEL_KEY} differs from the encoder's mel filterbank (designed for "
            f"{frontend.mel_rate} Hz, {frontend.fmin:g}-{frontend.fmax:g} Hz, {frontend.n_mels} "
            f"mels; max difference {error:.3g}){_suggest_frontend(stored, frontend)}"
        )


def load_reference_state_dict(
    encoder: AudioEncoder, state_dict: Mapping[str, Tensor], *, strict: bool = True
) -> None:
    """Load a state dict in the reference naming (file prefix already stripped).

    PANNs CNN14 names (``conv_block1.conv1.weight``, ``fc1.*``, ``fc_audioset.*``) or HTS-AT
    names (``patch_embed.*``, ``layers.*``, ``norm.*``, ``tscam_conv.*``) are mapped onto the
    encoder. Dropped by name: the STFT kernels (their shape is checked), ``melW`` (after checking
    it equals the encoder's filterbank), HTS-AT's ``relative_position_index`` and ``attn_mask``
    buffers and its unused ``head`` layer, and, when the encoder has no classifier
    (``num_classes=0``, as CLAP's audio towers), the file's classifier (``fc_audioset.*``,
    ``tscam_conv.*``), which no embedding depends on.

    Args:
        encoder: A clapkit encoder (``cnn14`` or ``htsat`` architecture).
        state_dict: Reference-named tensors.
        strict: Fail on missing or unexpected keys (the filterbank is always checked).

    Raises:
        CheckpointError: Listing missing, unexpected and wrongly shaped keys by name, or on a
            filterbank mismatch.
    """
    architecture = encoder.architecture
    if architecture not in _RENAMERS:
        raise CheckpointError(f"no reference naming is known for architecture {architecture!r}")
    rename = _RENAMERS[architecture]
    for key in STFT_KERNELS:
        if key in state_dict and state_dict[key].shape[-1] != encoder.frontend.n_fft:
            raise CheckpointError(
                f"{key} has shape {tuple(state_dict[key].shape)}: an STFT of "
                f"{state_dict[key].shape[-1]} points, but the encoder uses n_fft="
                f"{encoder.frontend.n_fft}"
            )
    if MEL_KEY in state_dict:
        check_mel_filterbank(state_dict[MEL_KEY], encoder.frontend)
    own = encoder.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        if _droppable(architecture, key):
            continue
        name = rename(key)
        if name is not None and encoder.num_classes == 0 and _classifier_key(name):
            continue
        if name is None or name not in own:
            unexpected.append(key)
        else:
            mapped[name] = value
    _load_checked(encoder, mapped, unexpected, strict, where="reference state dict")


def _load_checked(
    encoder: AudioEncoder,
    tensors: Mapping[str, Tensor],
    unexpected: list[str],
    strict: bool,
    where: str,
) -> None:
    own = encoder.state_dict()
    if encoder.num_classes == 0:  # a headless encoder takes a headed file's backbone
        tensors = {k: v for k, v in tensors.items() if not _classifier_key(k)}
    missing = sorted(k for k in own if k not in tensors)
    unexpected = sorted(set(unexpected) | {k for k in tensors if k not in own})
    shapes = sorted(
        f"{k}: file {tuple(v.shape)} vs encoder {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and v.shape != own[k].shape
    )
    problems = []
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    if strict and missing:
        hint = ""
        if all(_classifier_key(k) for k in missing):
            hint = " (the file has no classifier head: build the encoder with num_classes=0)"
        problems.append(f"missing keys (encoder names): {missing}{hint}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if problems:
        raise CheckpointError(
            f"{where} does not fit this {encoder.architecture} encoder; " + "; ".join(problems)
        )
    # Through load_state_dict (not copy_): its post hooks tell caches such as
    # clapkit.audio.InferenceFormCache that the weights changed.
    encoder.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refusals, truncated zips, non-torch files
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({error}); only tensor "
            "checkpoints and safetensors files are accepted"
        ) from error


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def identify_state_dict(state: Mapping[str, Any]) -> tuple[str, dict[str, Tensor]]:
    """Recognise a loaded checkpoint and pull out the audio encoder's tensors.

    Args:
        state: What ``torch.load`` returned, or a state dict.

    Returns:
        ``(format, tensors)``: format is ``"panns"``, ``"htsat-lightning"``, ``"msclap-2022"``,
        ``"msclap-2023"``, ``"msclap-clapcap"``, ``"laion"``, ``"reference"`` (reference names,
        no wrapper) or ``"clapkit"``; tensors carry reference names (clapkit names for
        ``"clapkit"``).

    Raises:
        CheckpointError: If the layout is not one of these.
    """
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        inner = state["state_dict"]
        if any(k.startswith("sed_model.") for k in inner):
            return "htsat-lightning", _strip(inner, "sed_model.")
        for prefix in ("module.audio_branch.", "audio_branch."):
            if any(k.startswith(prefix) for k in inner):
                return "laion", _strip(inner, prefix)
        state = inner
    elif "model" in state and isinstance(state["model"], Mapping):
        inner = state["model"]
        if any(k.startswith("audio_encoder.base.htsat.") for k in inner):
            return "msclap-2023", _strip(inner, "audio_encoder.base.htsat.")
        if any(k.startswith("audio_encoder.base.") for k in inner):
            return "msclap-2022", _strip(inner, "audio_encoder.base.")
        if any(k.startswith("clap.base.htsat.") for k in inner):
            return "msclap-clapcap", _strip(inner, "clap.base.htsat.")
        return ("panns" if "conv_block1.conv1.weight" in inner else "reference"), dict(inner)
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if "log_mel.bn0.weight" in tensors:
        return "clapkit", tensors
    if "conv_block1.conv1.weight" in tensors or "patch_embed.proj.weight" in tensors:
        return "reference", tensors
    raise CheckpointError(
        "unrecognised checkpoint layout: expected a PANNs file ('model'), an HTS-AT Lightning "
        "file ('state_dict' with 'sed_model.'), an msclap file ('audio_encoder.base.'), a LAION "
        f"file ('audio_branch.') or clapkit names; top-level keys: {sorted(state)[:8]}"
    )


def _architecture_of(tensors: Mapping[str, Tensor]) -> str | None:
    if "conv_block1.conv1.weight" in tensors:
        return "cnn14"
    if "patch_embed.proj.weight" in tensors:
        return "htsat"
    return None


def read_safetensors_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The encoder config stored in a clapkit safetensors file, or ``None`` if absent."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != SAFETENSORS_FORMAT or "config" not in metadata:
        return None
    config: dict[str, Any] = json.loads(metadata["config"])
    return config


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def load_weights(encoder: AudioEncoder, source: WeightsSource, *, strict: bool = True) -> str:
    """Load a weight file or state dict into ``encoder``, detecting its format.

    Accepts a PANNs ``.pth`` (``{"model": ...}``), an HTS-AT Lightning ``.ckpt``
    (``state_dict`` with ``sed_model.``), an msclap file (audio part: ``audio_encoder.base.``
    for 2022 CNN14, ``audio_encoder.base.htsat.`` for 2023 HTSAT; the projection and text parts
    are left to clapkit-core), a LAION-CLAP file (``audio_branch.``), clapkit safetensors, or a
    state dict. Pickles are read only with ``torch.load(weights_only=True)``.

    Args:
        encoder: The encoder to fill.
        source: Path or state dict.
        strict: Fail on missing or unexpected keys.

    Returns:
        The detected format name (see :func:`identify_state_dict`, plus ``"safetensors"``).

    Raises:
        CheckpointError: If the file is unreadable, of another architecture, built for another
            front end, or its keys do not match (listed by name).
        FileNotFoundError: If the path does not exist.
    """
    where = "state dict"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        if _is_safetensors(path):
            config = read_safetensors_config(path)
            if config is not None:
                _check_config(encoder, config, where)
            _load_checked(encoder, load_file(str(path)), [], strict, where)
            return "safetensors"
        state = _torch_load(path)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    else:
        state = source
    kind, tensors = identify_state_dict(state)
    if kind == "clapkit":
        _load_checked(encoder, tensors, [], strict, where)
        return kind
    architecture = _architecture_of(tensors)
    if architecture is not None and architecture != encoder.architecture:
        raise CheckpointError(
            f"{where} holds a {architecture} ({kind} format) but the encoder is "
            f"{encoder.architecture}; build it with clapkit.audio.{architecture}(weights=...)"
        )
    try:
        load_reference_state_dict(encoder, tensors, strict=strict)
    except CheckpointError as error:
        raise CheckpointError(f"{where} ({kind} format): {error}") from error
    return kind


def _check_config(encoder: AudioEncoder, config: Mapping[str, Any], where: str) -> None:
    if config.get("architecture") != encoder.architecture:
        raise CheckpointError(
            f"{where} holds a {config.get('architecture')} encoder, not {encoder.architecture}"
        )
    stored = FrontendConfig.from_dict(config["frontend"])
    if stored != encoder.frontend:
        differ = {
            k: (v, getattr(encoder.frontend, k))
            for k, v in stored.to_dict().items()
            if v != getattr(encoder.frontend, k)
        }
        raise CheckpointError(
            f"{where} was saved for another front end; differing fields (file, encoder): {differ}"
        )


def save_weights(encoder: AudioEncoder, path: str | os.PathLike) -> None:
    """Write the encoder's tensors and config as clapkit safetensors.

    Args:
        encoder: The encoder.
        path: Destination ``.safetensors`` file.
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    metadata = {"format": SAFETENSORS_FORMAT, "config": json.dumps(encoder.get_config())}
    save_file(tensors, str(path), metadata=metadata)
