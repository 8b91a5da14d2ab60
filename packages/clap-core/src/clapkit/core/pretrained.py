"""The ``save_pretrained`` folder layout shared by every clapkit model (CLAP, captioner).

A folder holds ``config.json`` (the model's typed config), ``model.safetensors`` (every weight)
and ``tokenizer/``; ``from_pretrained`` reads a local folder or a hub repo of that layout and
loads strictly. `ClapModel` and ``clapkit.caption.ClapCaptioner`` both use these functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from huggingface_hub import snapshot_download
from safetensors.torch import save_model
from torch import nn

from clapkit.core.state_dict import load_safetensors, load_strict

__all__ = [
    "CONFIG_FILE",
    "HUB_ARGUMENTS",
    "TOKENIZER_DIR",
    "WEIGHTS_FILE",
    "PretrainedFolder",
    "load_pretrained_weights",
    "locate_pretrained",
    "pretrained_folder",
    "read_pretrained",
    "write_pretrained",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
HUB_ARGUMENTS = ("revision", "cache_dir", "force_download", "local_files_only", "token")
"""The ``from_pretrained`` keyword arguments that `pretrained_folder` hands to the hub."""
T = TypeVar("T")


@dataclass(frozen=True)
class PretrainedFolder:
    """What `read_pretrained` found.

    Attributes:
        folder: the local folder (a hub snapshot for a repo id).
        config: the parsed ``config.json``.
        weights: the ``model.safetensors`` file.
        tokenizer: the ``tokenizer/`` folder.
    """

    folder: Path
    config: dict[str, Any]
    weights: Path
    tokenizer: Path

    def typed_config(self, parse: Callable[[dict[str, Any]], T]) -> T:
        """The config through ``parse`` (e.g. ``ClapConfig.from_dict``).

        Raises:
            ValueError: ``parse`` refused it (a foreign or outdated config): its message,
                after the ``config.json`` path.
        """
        try:
            return parse(self.config)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{self.folder / CONFIG_FILE}: {error}") from error


def _looks_local(model_id: str) -> bool:
    """A path no hub repo id can be: absolute, relative with ./ or ../, ~, a backslash, a
    trailing slash or more than one slash (hub ids are ``name`` or ``org/name``)."""
    return (
        os.path.isabs(model_id)
        or model_id.startswith(("./", "../", "~", ".\\"))
        or "\\" in model_id
        or model_id.endswith("/")
        or model_id.count("/") > 1
    )


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a ``config.json``, naming the file when it is not a JSON object.

    Args:
        path: the file.

    Returns:
        The parsed object.

    Raises:
        ValueError: the file is not valid JSON or not an object (file, line and column named).
    """
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file ({error.reason})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(config).__name__}")
    return config


def check_pretrained_source(model_id: str | os.PathLike[str], *, what: str) -> None:
    """Fail early, and clearly, on a local folder that cannot be a ``save_pretrained`` folder.

    Called before any hub lookup: a path that looks local but does not exist is reported as a
    missing folder (not as an invalid hub repo id), and a folder's malformed ``config.json`` is
    named.

    Args:
        model_id: a local folder or a hub repo id.
        what: the kind of model, for messages.

    Raises:
        FileNotFoundError: a local-looking path that does not exist, or a path to a file.
        ValueError: the folder's ``config.json`` is malformed.
    """
    text = os.fspath(model_id)
    if os.path.isdir(text):
        if (Path(text) / CONFIG_FILE).is_file():
            read_config_file(Path(text) / CONFIG_FILE)
        return
    if os.path.exists(text):
        raise FileNotFoundError(
            f"{text} is a file, not a {what} folder (save_pretrained writes one)"
        )
    if _looks_local(text):
        raise FileNotFoundError(
            f"no folder {text} (from {os.getcwd()}): give an existing {what} folder written "
            "by save_pretrained, or a hub repo id such as 'org/name'"
        )


def pretrained_folder(
    model_id: str | os.PathLike[str],
    *,
    allow_patterns: list[str] | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The local folder of ``model_id``: itself when it is a folder, else a hub snapshot.

    Args:
        model_id: a local folder or a hub repo id.
        allow_patterns: the files fetched from the hub; default the clapkit layout
            (``config.json``, ``model.safetensors``, ``tokenizer/*``).
        revision: hub revision.
        cache_dir: hub cache folder.
        force_download: re-download even if cached.
        local_files_only: never touch the network.
        token: hub token.

    Returns:
        The folder holding the files.

    Raises:
        FileNotFoundError: a local-looking path that does not exist, or an id that is neither
            a local folder nor a hub repo that could be fetched (both said, with the hub's
            error).
    """
    if os.path.isdir(model_id):
        return Path(model_id)
    check_pretrained_source(model_id, what="clapkit")
    patterns = allow_patterns or [CONFIG_FILE, WEIGHTS_FILE, f"{TOKENIZER_DIR}/*"]
    try:
        folder = snapshot_download(
            repo_id=os.fspath(model_id),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            allow_patterns=patterns,
        )
    except Exception as error:  # the hub's many error types: say what was tried
        raise FileNotFoundError(
            f"no local folder {os.fspath(model_id)} (from {os.getcwd()}), and fetching it as a "
            f"hub repo failed: {type(error).__name__}: {error}"
        ) from error
    return Path(folder)


def locate_pretrained(
    model_id: str | os.PathLike[str], kwargs: dict[str, Any], *, what: str
) -> tuple[Path, dict[str, Any]]:
    """The folder a ``from_pretrained(model_id, **kwargs)`` call reads, found before the hub
    mixin sees it (whose own errors do not say that no such local folder exists).

    Args:
        model_id: a local folder or a hub repo id.
        kwargs: the call's keyword arguments; the `HUB_ARGUMENTS` among them fetch the repo.
        what: the kind of model, for messages (``"clapkit model"``).

    Returns:
        The local folder, and ``kwargs`` without the hub arguments.

    Raises:
        FileNotFoundError: as `check_pretrained_source` and `pretrained_folder`.
        ValueError: the folder's ``config.json`` is malformed.
    """
    check_pretrained_source(model_id, what=what)
    hub = {name: value for name, value in kwargs.items() if name in HUB_ARGUMENTS}
    rest = {name: value for name, value in kwargs.items() if name not in HUB_ARGUMENTS}
    return pretrained_folder(model_id, **hub), rest


def read_pretrained(model_id: str | os.PathLike[str], *, what: str, **hub: Any) -> PretrainedFolder:
    """Locate and check a ``save_pretrained`` folder (local or hub) and read its config.

    Args:
        model_id: a local folder or a hub repo id.
        what: the kind of model, for messages (``"clapkit model"``, ``"clapkit captioner"``).
        **hub: `pretrained_folder`'s hub arguments (``revision``, ``cache_dir``,
            ``force_download``, ``local_files_only``, ``token``).

    Returns:
        The folder, its parsed config and the paths of weights and tokenizer.

    Raises:
        FileNotFoundError: naming the folder and the missing ``config.json`` or
            ``model.safetensors`` (only safetensors weights are read).
    """
    folder = pretrained_folder(model_id, **hub)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} has no {name}: not a {what} folder (clapkit reads only safetensors)"
            )
    config = read_config_file(folder / CONFIG_FILE)
    return PretrainedFolder(
        folder=folder,
        config=config,
        weights=folder / WEIGHTS_FILE,
        tokenizer=folder / TOKENIZER_DIR,
    )


def load_pretrained_weights(module: nn.Module, files: PretrainedFolder) -> None:
    """Load ``model.safetensors`` into ``module`` strictly (every key named on a mismatch).

    Args:
        module: the rebuilt model.
        files: from `read_pretrained`.

    Raises:
        clapkit.audio.CheckpointError: listing missing, unexpected and mis-shaped keys.
    """
    load_strict(module, load_safetensors(files.weights), source=str(files.weights))


def write_pretrained(
    directory: str | os.PathLike[str],
    *,
    config: dict[str, Any],
    module: nn.Module,
    save_tokenizer: Callable[[Path], Any],
) -> None:
    """Write ``config.json``, ``model.safetensors`` (shared tensors once) and ``tokenizer/``.

    Args:
        directory: the target folder (exists).
        config: the model's config as JSON types.
        module: the model whose every weight is saved.
        save_tokenizer: writes the tokenizer into the folder it is given.
    """
    folder = Path(directory)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_model(module, str(folder / WEIGHTS_FILE))
    save_tokenizer(folder / TOKENIZER_DIR)
