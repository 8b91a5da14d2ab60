"""Official weights by name: ``ClapModel.from_pretrained("msclap-2023")``.

One table (``catalog.json``, shipped in the wheel) names each released checkpoint: where its
authors publish it (a hub repository and file, or an archive URL), its SHA-256 as the publisher's
host states it, its licence and the paper figures it reproduces. Loading a name downloads the
file once (``huggingface_hub.hf_hub_download``, or the URL into clapkit's cache), checks its
SHA-256, converts it once and caches the converted folder (``$CLAPKIT_CACHE``, default
``~/.cache/clapkit``); later loads read that folder. Files whose hash the table does not hold
load with a `UnverifiedWeightsWarning` that says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ChecksumError",
    "NamedWeights",
    "UnverifiedWeightsWarning",
    "cache_root",
    "clap_writer",
    "fetch_weights",
    "list_pretrained",
    "named_folder",
    "named_weights",
    "pretrained_audio_encoder",
    "pretrained_table",
    "read_catalog",
    "sha256_of",
]

KINDS = ("clap", "captioner", "audio-encoder")


class ChecksumError(ValueError):
    """A downloaded file whose SHA-256 is not the published one."""


class UnverifiedWeightsWarning(UserWarning):
    """Weights loaded by name whose SHA-256 the catalog does not hold."""


@dataclass(frozen=True)
class NamedWeights:
    """One row of the catalog.

    Attributes:
        name: the name ``from_pretrained`` takes.
        kind: ``"clap"``, ``"captioner"`` or ``"audio-encoder"``.
        format: the converter (``msclap``, ``laion``, ``transformers``, ``clapcap``, ``panns``).
        options: the converter's arguments (``version``, ``tokenizer``, ...).
        repo_id: the hub repository, or ``None``.
        filename: the file in it (or the URL's file name); ``None`` for a whole repository.
        url: an archive URL when there is no hub file.
        sha256: the published SHA-256, or ``None`` (not verified).
        size: the published size in bytes, or ``None``.
        licence: the weights' licence as their publisher states it.
        paper: the paper (and table) the figures come from.
        figures: metric -> the paper's number the weights reproduce.
    """

    name: str
    kind: str
    format: str
    repo_id: str | None
    filename: str | None
    url: str | None
    sha256: str | None
    licence: str
    paper: str
    options: Mapping[str, Any] = field(default_factory=dict)
    size: int | None = None
    figures: Mapping[str, float] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """Where the file comes from, in one string."""
        if self.repo_id:
            return f"hf://{self.repo_id}" + (f"/{self.filename}" if self.filename else "")
        return str(self.url)


@functools.lru_cache(maxsize=4)
def read_catalog(path: str | None = None) -> dict[str, NamedWeights]:
    """The catalog, by name (the packaged ``catalog.json`` unless ``path`` names another).

    Args:
        path: a catalog file of the same layout, or ``None``.

    Returns:
        name -> `NamedWeights`.

    Raises:
        ValueError: a row of an unknown kind or without a source, named.
    """
    text = (
        Path(path).read_text()
        if path
        else resources.files("clapkit.core").joinpath("catalog.json").read_text()
    )
    rows = {}
    for row in json.loads(text)["weights"]:
        entry = NamedWeights(**row)
        if entry.kind not in KINDS or not (entry.repo_id or entry.url):
            raise ValueError(
                f"catalog row {entry.name!r}: kind must be one of {KINDS}, with a source"
            )
        rows[entry.name] = entry
    return rows


def named_weights(name: str) -> NamedWeights | None:
    """The catalog row of ``name``, or ``None`` when it is not a catalog name."""
    return read_catalog(os.environ.get("CLAPKIT_CATALOG")).get(name)


def list_pretrained(kind: str | None = None) -> list[NamedWeights]:
    """Every weight loadable by name (of one kind: ``clap``, ``captioner``, ``audio-encoder``).

    Args:
        kind: keep only this kind.

    Returns:
        The rows, in catalog order.
    """
    rows = read_catalog(os.environ.get("CLAPKIT_CATALOG")).values()
    return [row for row in rows if kind is None or row.kind == kind]


def pretrained_table(kind: str | None = None) -> str:
    """`list_pretrained` as a Markdown table: name, kind, source, sha256, licence, figures."""
    lines = [
        "| name | kind | source | sha256 | licence | paper figures |",
        "|---|---|---|---|---|---|",
    ]
    for row in list_pretrained(kind):
        figures = ", ".join(f"{metric} {value:g}" for metric, value in row.figures.items())
        digest = row.sha256[:12] + "..." if row.sha256 else "not verified"
        lines.append(f"| {row.name} | {row.kind} | {row.source} | {digest} | {row.licence} | "
                     f"{figures or '-'} |")  # fmt: skip
    return "\n".join(lines)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """clapkit's cache: ``cache_dir``, else ``$CLAPKIT_CACHE``, else ``~/.cache/clapkit``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("CLAPKIT_CACHE", Path.home() / ".cache" / "clapkit"))


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path) -> None:
    """``url`` to ``target``, written beside it and renamed (never half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def fetch_weights(
    entry: NamedWeights,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> Path:
    """The entry's file on this machine: downloaded when missing, its SHA-256 checked.

    Args:
        entry: a catalog row with a file (``filename``).
        cache_dir: clapkit's cache (URL files) and the hub cache's folder (hub files).
        force_download: download again even if cached.
        local_files_only: never download; a missing file is an error.

    Returns:
        The local file.

    Raises:
        ChecksumError: the file's SHA-256 is not the published one (both named).
        FileNotFoundError: ``local_files_only`` and the file is not cached.
    """
    if entry.repo_id and entry.filename:
        from huggingface_hub import hf_hub_download

        hub_cache = None if cache_dir is None else str(cache_root(cache_dir) / "hub")
        path = Path(hf_hub_download(entry.repo_id, entry.filename, cache_dir=hub_cache,
                                    force_download=force_download,
                                    local_files_only=local_files_only))  # fmt: skip
    else:
        path = cache_root(cache_dir) / "downloads" / entry.name / str(entry.filename)
        if force_download or not path.is_file():
            if local_files_only:
                raise FileNotFoundError(f"{entry.name}: {path} is not cached (local_files_only)")
            _download(str(entry.url), path)
    actual = sha256_of(path)
    if entry.sha256 is None:
        warnings.warn(
            f"{entry.name}: {path} was not verified: the catalog holds no published SHA-256 "
            f"for {entry.source} (this file's is {actual})",
            UnverifiedWeightsWarning,
            stacklevel=3,
        )
    elif actual != entry.sha256:
        raise ChecksumError(
            f"{entry.name}: {path} has SHA-256 {actual}, but {entry.source} is published "
            f"with {entry.sha256}: a damaged or different file (download it again with "
            "force_download=True)"
        )
    return path


def named_folder(
    name: str | os.PathLike[str],
    kind: str,
    write: Callable[[NamedWeights, str, Path], None],
    hub: dict[str, Any],
) -> Path | None:
    """The converted folder of a catalog name, converted and cached on first use.

    Args:
        name: what the caller's ``from_pretrained`` got.
        kind: the kind the caller loads (a row of another kind is an error).
        write: ``(entry, source, folder)`` converts the downloaded file (or hub repo id, for
            whole-repository rows) into ``folder``.
        hub: the call's ``cache_dir`` / ``force_download`` / ``local_files_only`` (popped).

    Returns:
        The folder, or ``None`` when ``name`` is not a catalog name (or is an existing path).

    Raises:
        ValueError: the name is of another kind.
        ChecksumError: as `fetch_weights`.
    """
    text = os.fspath(name)
    entry = None if os.path.exists(text) else named_weights(text)
    if entry is None:
        return None
    if entry.kind != kind:
        raise ValueError(f"{text!r} names {entry.kind} weights, not {kind} weights")
    cache_dir = hub.pop("cache_dir", None)
    force = bool(hub.pop("force_download", False))
    local_only = bool(hub.pop("local_files_only", False))
    tag = (entry.sha256 or "unverified")[:12]
    folder = cache_root(cache_dir) / "converted" / f"{entry.name}-{tag}"
    if folder.is_dir() and not force:
        return folder
    source = (
        str(
            fetch_weights(
                entry, cache_dir=cache_dir, force_download=force, local_files_only=local_only
            )
        )
        if entry.filename
        else str(entry.repo_id)
    )
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        write(entry, source, partial)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


_AUDIO_BUILDERS = {"panns": "cnn14", "htsat": "htsat"}


def clap_writer(
    model_class: Any, overrides: Mapping[str, Any]
) -> Callable[[NamedWeights, str, Path], None]:
    """The converter of ``clap`` rows: ``from_msclap`` / ``from_laion`` / ``from_transformers``.

    Args:
        model_class: ``ClapModel`` (or a subclass).
        overrides: converter arguments given by the caller (``tokenizer=`` for offline use).

    Returns:
        ``write(entry, source, folder)`` for `named_folder`.
    """

    def write(entry: NamedWeights, source: str, folder: Path) -> None:
        loaders = {
            "msclap": model_class.from_msclap,
            "laion": model_class.from_laion,
            "transformers": model_class.from_transformers,
        }
        options = {**entry.options, **{k: v for k, v in overrides.items() if v is not None}}
        loaders[entry.format](source, **options).save_pretrained(folder)

    return write


def pretrained_audio_encoder(name: str, **options: Any) -> Any:
    """A released audio encoder by name (``"panns-cnn14"``), downloaded, checked, cached.

    Args:
        name: an ``audio-encoder`` row of the catalog.
        **options: ``cache_dir``, ``force_download``, ``local_files_only``.

    Returns:
        The ``clapkit.audio`` encoder, in eval mode.

    Raises:
        KeyError: not a catalog name, listing the audio-encoder names.
        ChecksumError: as `fetch_weights`.
    """
    from clapkit.core.registry import import_encoder_package

    audio = import_encoder_package("clapkit.audio")

    def write(entry: NamedWeights, source: str, folder: Path) -> None:
        builder = getattr(audio, _AUDIO_BUILDERS[entry.format])
        folder.mkdir(parents=True)
        audio.save_weights(builder(weights=source, **entry.options), folder / "encoder.safetensors")

    folder = named_folder(name, "audio-encoder", write, dict(options))
    if folder is None:
        names = [row.name for row in list_pretrained("audio-encoder")]
        raise KeyError(f"no audio encoder named {name!r}; the catalog holds {names}")
    return audio.load_audio_encoder(folder / "encoder.safetensors").eval()
