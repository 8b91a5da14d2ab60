"""Name registry of audio and text encoders, imported lazily from their packages.

Core never imports ``clapkit.audio`` or ``clapkit.text`` at module level: a name resolves to
``"module:function"`` and the module is imported on first use, so ``clapkit-core`` installs and
imports without either encoder package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = [
    "build_audio_encoder_from_config",
    "build_text_encoder_from_config",
    "create_audio_encoder",
    "create_text_encoder",
    "import_encoder_package",
    "list_audio_encoders",
    "list_text_encoders",
    "register_audio_encoder",
    "register_text_encoder",
]

Builder = Callable[..., nn.Module]

# import name -> what to install when it is missing
_DISTRIBUTIONS = {
    "clapkit.audio": ("clapkit-audio-encoders", "audio"),
    "clapkit.text": ("clapkit-text-encoders", "text"),
}

_AUDIO: dict[str, Builder | str] = {
    "cnn14": "clapkit.audio:cnn14",
    "htsat": "clapkit.audio:htsat",
    "htsat-22": "clapkit.audio:htsat_22",
}
_TEXT: dict[str, Builder | str] = {
    "bert": "clapkit.text:bert",
    "roberta": "clapkit.text:roberta",
    "clip": "clapkit.text:clip_text",
    "gpt2-eot": "clapkit.text:gpt2_eot",
}
# get_config()["architecture"] -> function rebuilding a user's encoder from its config
_AUDIO_FROM_CONFIG: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}
_TEXT_FROM_CONFIG: dict[str, Callable[[dict[str, Any], Any], nn.Module]] = {}


def import_encoder_package(module: str) -> Any:
    """Import ``clapkit.audio`` / ``clapkit.text`` (or any module), saying what to install.

    Args:
        module: dotted module name.

    Returns:
        The module.

    Raises:
        ImportError: naming the distribution to install when the module is missing.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        for package, (dist, extra) in _DISTRIBUTIONS.items():
            # only the encoder package itself missing; a missing dependency keeps its own error
            if module.startswith(package) and error.name in (package, "clapkit"):
                raise ImportError(
                    f"{module} is not installed: pip install {dist} "
                    f"(or pip install 'clapkit-core[{extra}]')"
                ) from error
        raise


def _resolve(builder: Builder | str) -> Builder:
    if callable(builder):
        return builder
    module, _, attribute = builder.partition(":")
    return getattr(import_encoder_package(module), attribute)


def _lookup(table: dict[str, Builder | str], kind: str, name: str) -> Builder:
    if name not in table:
        raise KeyError(f"unknown {kind} encoder {name!r}; registered: {', '.join(sorted(table))}")
    return _resolve(table[name])


def _register(
    table: dict[str, Builder | str], kind: str, name: str, builder: Builder | str, overwrite: bool
) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} encoder name must be a non-empty string, got {name!r}")
    if not (callable(builder) or (isinstance(builder, str) and ":" in builder)):
        raise TypeError(f"builder must be a callable or 'module:function', got {builder!r}")
    if name in table and not overwrite:
        raise ValueError(f"{kind} encoder {name!r} is already registered (pass overwrite=True)")
    table[name] = builder


def register_audio_encoder(
    name: str,
    builder: Builder | str,
    *,
    from_config: Callable[[dict[str, Any]], nn.Module] | None = None,
    overwrite: bool = False,
) -> None:
    """Register an audio encoder under ``name`` for `create_audio_encoder` and `build_clap`.

    The encoder must follow the ``clapkit.audio.AudioEncoder`` interface: ``frontend``,
    ``out_dim``, ``forward(waveform[b, t])`` returning an object with ``embedding[b, d]``,
    and ``get_config()``.

    Args:
        name: registry name.
        builder: callable returning the encoder (keyword overrides passed through), or a lazy
            ``"module:function"`` string.
        from_config: rebuilds the encoder from its ``get_config()`` dict so that
            `ClapModel.from_pretrained` can load models using it; keyed by that dict's
            ``"architecture"`` value, which must then equal ``name``.
        overwrite: replace an existing registration.

    Raises:
        ValueError: if ``name`` is taken and ``overwrite`` is false.
        TypeError: if ``builder`` is neither callable nor a ``"module:function"`` string.
    """
    _register(_AUDIO, "audio", name, builder, overwrite)
    if from_config is not None:
        _AUDIO_FROM_CONFIG[name] = from_config


def register_text_encoder(
    name: str,
    builder: Builder | str,
    *,
    from_config: Callable[[dict[str, Any], Any], nn.Module] | None = None,
    overwrite: bool = False,
) -> None:
    """Register a text encoder (``clapkit.text.TextEncoder`` interface) under ``name``.

    Args:
        name: registry name.
        builder: callable returning the encoder, or a lazy ``"module:function"`` string.
        from_config: ``(config, tokenizer) -> encoder`` used by `ClapModel.from_pretrained`
            for configs whose ``"architecture"`` equals ``name``.
        overwrite: replace an existing registration.

    Raises:
        ValueError: if ``name`` is taken and ``overwrite`` is false.
        TypeError: if ``builder`` is neither callable nor a ``"module:function"`` string.
    """
    _register(_TEXT, "text", name, builder, overwrite)
    if from_config is not None:
        _TEXT_FROM_CONFIG[name] = from_config


def list_audio_encoders() -> list[str]:
    """Names of the registered audio encoders, sorted."""
    return sorted(_AUDIO)


def list_text_encoders() -> list[str]:
    """Names of the registered text encoders, sorted."""
    return sorted(_TEXT)


def create_audio_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build a registered audio encoder.

    Args:
        name: a name from `list_audio_encoders` (``cnn14``, ``htsat``, ``htsat-22``, ...).
        **overrides: keyword arguments of the builder (e.g. ``weights=``).

    Returns:
        The encoder.

    Raises:
        KeyError: for an unknown name, listing the registered ones.
        ImportError: when the package providing it is not installed, naming what to install.
    """
    return _lookup(_AUDIO, "audio", name)(**overrides)


def create_text_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build a registered text encoder.

    Args:
        name: a name from `list_text_encoders` (``bert``, ``roberta``, ``clip``, ``gpt2-eot``).
        **overrides: keyword arguments of the builder (``pretrained=``, ``config=``,
            ``tokenizer=``, ...).

    Returns:
        The encoder.

    Raises:
        KeyError: for an unknown name, listing the registered ones.
        ImportError: when the package providing it is not installed, naming what to install.
    """
    return _lookup(_TEXT, "text", name)(**overrides)


def build_audio_encoder_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild an audio encoder (random weights) from its ``get_config()`` dict.

    Args:
        config: the encoder's config.

    Returns:
        The encoder.

    Raises:
        ImportError: when ``clapkit.audio`` is needed but missing.
    """
    rebuild = _AUDIO_FROM_CONFIG.get(str(config.get("architecture")))
    if rebuild is not None:
        return rebuild(config)
    audio = import_encoder_package("clapkit.audio")
    return audio.build_audio_encoder(config)


def build_text_encoder_from_config(config: dict[str, Any], tokenizer: Any) -> nn.Module:
    """Rebuild a text encoder (random weights) from its ``get_config()`` dict and a tokenizer.

    Args:
        config: the encoder's config.
        tokenizer: tokenizer object or folder.

    Returns:
        The encoder.

    Raises:
        ImportError: when ``clapkit.text`` is needed but missing.
    """
    rebuild = _TEXT_FROM_CONFIG.get(str(config.get("architecture")))
    if rebuild is not None:
        return rebuild(config, tokenizer)
    text = import_encoder_package("clapkit.text")
    return text.build_text_encoder(config, tokenizer)
