"""Safe reading of checkpoint files and strict, named bookkeeping of state-dict keys.

Every failure raises ``clapkit.audio.CheckpointError`` (the one strict-loading error type of
clapkit, a ``ValueError``); core imports it lazily so that it still imports without the audio
package, and then raises a plain ``ValueError`` with the same message.
"""

from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

__all__ = [
    "HARMLESS_BUFFER_SUFFIXES",
    "check_consumed",
    "check_state",
    "checkpoint_error",
    "drop_harmless_buffers",
    "load_checkpoint",
    "load_safetensors",
    "load_strict",
    "split_prefix",
    "strip_prefix",
    "tied_names",
]

# Buffers that old transformers versions saved and newer ones recompute: constant position ids,
# all-zero token type ids, GPT-2's causal-mask buffers. Dropped by exact name suffix.
HARMLESS_BUFFER_SUFFIXES = (
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    ".attn.bias",
    ".attn.masked_bias",
)
_SHOWN = 20


def checkpoint_error(message: str) -> ValueError:
    """The error to raise for a checkpoint that cannot be read safely or does not fit.

    Args:
        message: what is wrong, naming the file and keys.

    Returns:
        A ``clapkit.audio.CheckpointError`` (a plain ``ValueError`` when ``clapkit.audio`` is
        not installed).
    """
    try:
        audio = importlib.import_module("clapkit.audio")
    except ModuleNotFoundError:
        return ValueError(message)
    error: ValueError = audio.CheckpointError(message)
    return error


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file on the CPU.

    Args:
        path: the file.

    Returns:
        Name -> tensor.

    Raises:
        clapkit.audio.CheckpointError: naming the file if it is missing or not valid safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise checkpoint_error(f"{path}: no such file")
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types
        raise checkpoint_error(f"{path}: not a valid safetensors file ({error})") from error


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a checkpoint file safely: safetensors, or ``torch.load(weights_only=True)``.

    A pickle that would run code (or build arbitrary objects) when loaded is refused: only
    tensors, numbers, strings and plain containers are accepted. Wrapper dicts are unwrapped
    (``model`` as in msclap and PANNs, ``state_dict`` as in LAION-CLAP and Lightning).

    Args:
        path: ``.safetensors``, ``.pth``, ``.pt``, ``.ckpt`` or ``.bin`` file.

    Returns:
        Name -> tensor (entries that are not tensors, e.g. step counters, are left out).

    Raises:
        clapkit.audio.CheckpointError: naming the file if it is missing, unsafe or holds no
            state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise checkpoint_error(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise checkpoint_error(
            f"{path}: refused: the file holds objects other than tensors and plain containers, "
            f"which could run code when unpickled (weights_only=True said: {error})"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise checkpoint_error(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    for key in ("model", "state_dict"):
        if isinstance(content, Mapping) and isinstance(content.get(key), Mapping):
            content = content[key]
            break
    if not isinstance(content, Mapping):
        raise checkpoint_error(f"{path}: holds a {type(content).__name__}, not a state dict")
    tensors = {str(k): v for k, v in content.items() if isinstance(v, Tensor)}
    if not tensors:
        raise checkpoint_error(f"{path}: holds no tensors")
    return tensors


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. DDP's ``module.``); others unchanged."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def split_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Pop every key starting with ``prefix`` out of ``state`` and return them without it.

    Args:
        state: the remaining keys (modified in place).
        prefix: e.g. ``"audio_encoder.base."``.

    Returns:
        The popped entries, prefix removed.
    """
    taken = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    return taken


def drop_harmless_buffers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop, by name, buffers old transformers versions saved and newer ones recompute.

    Args:
        state: a text model's state dict.

    Returns:
        The state dict without ``position_ids``, ``token_type_ids``, ``attn.bias`` and
        ``attn.masked_bias`` buffers.
    """
    return {k: v for k, v in state.items() if not k.endswith(HARMLESS_BUFFER_SUFFIXES)}


def tied_names(module: nn.Module) -> list[set[str]]:
    """Groups of state-dict names that are one tensor (tied weights, e.g. GPT-2's ``lm_head``).

    Args:
        module: any module.

    Returns:
        One set of two or more names per shared parameter or buffer.
    """
    groups: dict[int, set[str]] = {}
    named = [
        *module.named_parameters(remove_duplicate=False),
        *module.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        groups.setdefault(id(tensor), set()).add(name)
    return [names for names in groups.values() if len(names) > 1]


def check_state(
    module: nn.Module, state: Mapping[str, Tensor], *, source: str, prefix: str = ""
) -> None:
    """Check, without loading, that ``state`` fits ``module`` exactly (see `load_strict`).

    Works on a module built on the ``meta`` device (names and shapes only).

    Args:
        module: the module to fill.
        state: its state dict.
        source: the file or part being loaded, for the error message.
        prefix: shown before key names in the message (e.g. ``"text_encoder.model."``).

    Raises:
        clapkit.audio.CheckpointError: listing missing keys, unexpected keys and shape
            mismatches.
    """
    own = module.state_dict()
    missing = set(own) - set(state)
    for names in tied_names(module):
        if names & set(state):
            missing -= names
    unexpected = set(state) - set(own)
    mismatched = [
        f"{prefix}{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_names(prefix + k for k in missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_names(prefix + k for k in unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {_names(mismatched)}")
        raise checkpoint_error(f"{source} does not match the model: " + "; ".join(parts))


def load_strict(
    module: nn.Module, state: Mapping[str, Tensor], *, source: str, prefix: str = ""
) -> None:
    """``load_state_dict`` that names every missing, unexpected or mis-shaped key on failure.

    A tied tensor needs only one of its names in ``state`` (safetensors' ``save_model`` writes
    shared tensors once).

    Args:
        module: the module to fill.
        state: its state dict.
        source: the file or part being loaded, for the error message.
        prefix: shown before key names in the message (e.g. ``"text_encoder.model."``).

    Raises:
        clapkit.audio.CheckpointError: listing missing keys, unexpected keys and shape
            mismatches.
    """
    check_state(module, state, source=source, prefix=prefix)
    module.load_state_dict(dict(state), strict=False)  # completeness checked above


def check_consumed(state: Mapping[str, Tensor], source: str) -> None:
    """Fail, listing them, if any keys of a checkpoint were not used.

    Args:
        state: the keys left after every known part was taken out.
        source: the file, for the message.

    Raises:
        clapkit.audio.CheckpointError: if ``state`` is not empty.
    """
    if state:
        raise checkpoint_error(f"{source}: unexpected keys: {_names(state)}")
