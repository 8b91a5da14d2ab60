"""Name registry of audio and text encoders: the encoder packages' tables plus your own.

The built-in names are exactly ``clapkit.audio.NAMED_ENCODERS`` and
``clapkit.text.NAMED_ENCODERS``, read on first use (core never imports those packages at module
level, so ``clapkit-core`` installs and imports without either). `register_audio_encoder` /
`register_text_encoder` add a researcher's own encoders on top. Without an encoder package its
built-in names are unknown: looking one up raises ``ImportError`` naming what to install.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = [
    "build_audio_encoder_from_config",
    "build_text_encoder_from_config",
    "create_audio_encoder",
    "create_audio_tower",
    "create_text_encoder",
    "import_encoder_package",
    "list_audio_encoders",
    "list_text_encoders",
    "register_audio_encoder",
    "register_text_encoder",
    "without_classifier",
]

Builder = Callable[..., nn.Module]

# kind -> (module holding NAMED_ENCODERS, distribution, clapkit-core extra)
_PACKAGES = {
    "audio": ("clapkit.audio", "clapkit-audio-encoders", "audio"),
    "text": ("clapkit.text", "clapkit-text-encoders", "text"),
}
# the user's own registrations (built-in names live in the encoder packages)
_USER: dict[str, dict[str, Builder | str]] = {"audio": {}, "text": {}}
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
        for package, dist, extra in _PACKAGES.values():
            # only the encoder package itself missing; a missing dependency keeps its own error
            if module.startswith(package) and error.name in (package, "clapkit"):
                raise ImportError(
                    f"{module} is not installed: pip install {dist} "
                    f"(or pip install 'clapkit-core[{extra}]')"
                ) from error
        raise


def _builtin(kind: str) -> dict[str, Builder]:
    """The encoder package's ``NAMED_ENCODERS`` (ImportError naming the package if missing)."""
    module = _PACKAGES[kind][0]
    return dict(import_encoder_package(module).NAMED_ENCODERS)


def _table(kind: str) -> dict[str, Builder | str]:
    """Built-in names (empty without the package) overlaid with the user's registrations."""
    try:
        builtin: dict[str, Builder | str] = dict(_builtin(kind))
    except ImportError:
        builtin = {}
    return {**builtin, **_USER[kind]}


def _resolve(builder: Builder | str) -> Builder:
    if callable(builder):
        return builder
    module, _, attribute = builder.partition(":")
    return getattr(import_encoder_package(module), attribute)


def _lookup(kind: str, name: str) -> Builder:
    if name in _USER[kind]:
        return _resolve(_USER[kind][name])
    module, dist, extra = _PACKAGES[kind]
    try:
        builtin = _builtin(kind)
    except ImportError as error:
        raise ImportError(
            f"{kind} encoder {name!r} is not one you registered, and the built-in {kind} "
            f"encoders come from {module}, which is not installed: pip install {dist} "
            f"(or pip install 'clapkit-core[{extra}]')"
        ) from error
    if name not in builtin:
        names = sorted({*builtin, *_USER[kind]})
        raise KeyError(f"unknown {kind} encoder {name!r}; registered: {', '.join(names)}")
    return builtin[name]


def _register(kind: str, name: str, builder: Builder | str, overwrite: bool) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} encoder name must be a non-empty string, got {name!r}")
    if not (callable(builder) or (isinstance(builder, str) and ":" in builder)):
        raise TypeError(f"builder must be a callable or 'module:function', got {builder!r}")
    if name in _table(kind) and not overwrite:
        raise ValueError(f"{kind} encoder {name!r} is already registered (pass overwrite=True)")
    _USER[kind][name] = builder


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
    _register("audio", name, builder, overwrite)
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
    _register("text", name, builder, overwrite)
    if from_config is not None:
        _TEXT_FROM_CONFIG[name] = from_config


def list_audio_encoders() -> list[str]:
    """Names of the audio encoders: ``clapkit.audio.NAMED_ENCODERS`` and your own, sorted.

    Returns:
        The names (only your own when ``clapkit.audio`` is not installed).
    """
    return sorted(_table("audio"))


def list_text_encoders() -> list[str]:
    """Names of the text encoders: ``clapkit.text.NAMED_ENCODERS`` and your own, sorted.

    Returns:
        The names (only your own when ``clapkit.text`` is not installed).
    """
    return sorted(_table("text"))


def create_audio_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build a registered audio encoder.

    Args:
        name: a name from `list_audio_encoders` (``cnn14``, ``htsat``, ``htsat-22``,
            ``cnn14-msclap-2022``, ``htsat-msclap-2023``, or your own).
        **overrides: keyword arguments of the builder (e.g. ``weights=``).

    Returns:
        The encoder.

    Raises:
        KeyError: for an unknown name, listing the registered ones.
        ImportError: when the name is not your own and ``clapkit.audio`` is not installed,
            naming what to install.
    """
    return _lookup("audio", name)(**overrides)


def create_audio_tower(name: str, **overrides: Any) -> nn.Module:
    """Build a registered audio encoder as an audio tower: without a classifier head.

    CLAP, its captioner and fine-tuning use the embedding only; a head no loss reaches is a set
    of parameters without gradients, which DDP refuses at the second update. Builders that take
    ``num_classes`` (every ``clapkit.audio`` builder) get ``num_classes=0``, so a weight file's
    classifier is dropped by name when it loads; any other encoder with ``reset_classifier``
    loses its head after building.

    Args:
        name: a name from `list_audio_encoders`.
        **overrides: keyword arguments of the builder (e.g. ``weights=``).

    Returns:
        The encoder, ``num_classes == 0`` where it has the attribute.

    Raises:
        KeyError: for an unknown name, listing the registered ones.
        ImportError: when the name's package is not installed, naming what to install.
    """
    builder = _lookup("audio", name)
    parameters = inspect.signature(builder).parameters.values()
    if any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in parameters):
        overrides.setdefault("num_classes", 0)
    return without_classifier(builder(**overrides))


def without_classifier(encoder: nn.Module) -> nn.Module:
    """``encoder`` with its classifier head removed (``reset_classifier(0)``), if it has one."""
    if getattr(encoder, "num_classes", 0) and callable(getattr(encoder, "reset_classifier", None)):
        encoder.reset_classifier(0)  # type: ignore[operator]
    return encoder


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
        ImportError: when the name is not your own and ``clapkit.text`` is not installed,
            naming what to install.
    """
    return _lookup("text", name)(**overrides)


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
