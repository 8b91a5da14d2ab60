"""JSON Lines manifests: one clip a line, paths relative to the manifest.

A line is ``{"audio": "clips/a.flac", "caption": "a dog barks" | ["...", ...], "labels": [...]}``
plus any other fields (``split``, ``duration``, ...), which are kept in ``ManifestRecord.extra``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=_Keyed)


class ManifestError(ValueError):
    """A manifest line is malformed; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class ManifestRecord:
    """One clip of a manifest.

    Attributes:
        audio: absolute path of the audio file.
        captions: the clip's captions (may be empty for label-only evaluation manifests).
        labels: the clip's class labels (empty when it has none).
        key: a unique name for the clip (the path relative to the manifest, without suffix).
        extra: every other field of the line, unchanged.
    """

    audio: Path
    captions: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The record as a manifest line, the audio path relative to ``relative_to`` if given."""
        audio = self.audio
        if relative_to is not None:
            audio = Path(os.path.relpath(self.audio, relative_to))
        line: dict[str, Any] = {"audio": audio.as_posix()}
        if self.captions:
            line["caption"] = self.captions[0] if len(self.captions) == 1 else list(self.captions)
        if self.labels:
            line["labels"] = list(self.labels)
        line.update(self.extra)
        return line


def _string_tuple(value: Any, name: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():  # a caption or class of nothing: a data preparation slip
            raise ManifestError(f"{where}: {name!r} is blank ({value!r})")
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        for index, item in enumerate(value):
            if not item.strip():
                raise ManifestError(f"{where}: {name!r}[{index}] is blank ({item!r})")
        return tuple(value)
    raise ManifestError(f"{where}: {name!r} must be a string or a list of strings, got {value!r}")


def parse_record(line: dict[str, Any], root: Path, where: str) -> ManifestRecord:
    """Validate one decoded manifest line.

    Args:
        line: the decoded JSON object.
        root: the folder relative paths are resolved against (the manifest's folder).
        where: ``"file:line"`` used in error messages.

    Returns:
        The record, with an absolute audio path.

    Raises:
        ManifestError: a required field is missing, a field has the wrong type, or a caption
            or label is blank.
    """
    if not isinstance(line, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(line).__name__}")
    audio = line.get("audio")
    if not isinstance(audio, str) or not audio:
        raise ManifestError(f"{where}: missing or empty 'audio' path")
    captions = _string_tuple(line.get("caption", []), "caption", where)
    labels = _string_tuple(line.get("labels", []), "labels", where)
    extra = {k: v for k, v in line.items() if k not in ("audio", "caption", "labels")}
    path = Path(audio)
    key = str(extra.pop("key", path.with_suffix("").as_posix()))
    return ManifestRecord(
        audio=path if path.is_absolute() else root / path,
        captions=captions,
        labels=labels,
        key=key,
        extra=extra,
    )


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRecord]:
    """Read a JSON Lines manifest; blank lines are ignored.

    Args:
        path: the manifest file.

    Returns:
        The records in file order.

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: a line is not JSON, misses ``audio``, has mistyped fields, or two lines
            share a key.
    """
    return read_json_lines(path, parse_record, what="manifest")


def read_json_lines(
    path: str | os.PathLike[str],
    parse: Callable[[Any, Path, str], R],
    *,
    what: str,
) -> list[R]:
    """Records of a JSON Lines file, one per non-blank line, each with a unique ``key``.

    Args:
        path: the file.
        parse: ``(decoded line, the file's folder, "file:line") -> record`` (raises
            ``ManifestError`` naming ``file:line``); the record has a ``key``.
        what: what the file is, for the missing-file error (``"manifest"``).

    Returns:
        The records in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ManifestError: ``file:line``: not JSON, what ``parse`` refuses, or a repeated key.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise FileNotFoundError(f"{what} {manifest} does not exist")
    records: list[R] = []
    seen: dict[str, str] = {}
    with manifest.open(encoding="utf-8-sig") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            where = f"{manifest}:{number}"
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{where}: not valid JSON ({error.msg})") from error
            record = parse(decoded, manifest.parent, where)
            if record.key in seen:
                raise ManifestError(f"{where}: key {record.key!r} repeats {seen[record.key]}")
            seen[record.key] = where
            records.append(record)
    return records


def write_manifest(
    records: Iterable[ManifestRecord], path: str | os.PathLike[str], *, relative: bool = True
) -> Path:
    """Write records as JSON Lines.

    Args:
        records: the clips.
        path: the output file (its folder is created).
        relative: store audio paths relative to the manifest's folder.

    Returns:
        The manifest path.
    """
    manifest = Path(path)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    root = manifest.parent.resolve() if relative else None
    with manifest.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json(root), ensure_ascii=False) + "\n")
    return manifest


def records_from_folder(
    folder: str | os.PathLike[str], suffixes: Sequence[str] = AUDIO_SUFFIXES
) -> list[ManifestRecord]:
    """Records for every audio file under a folder, captions from sidecar files.

    A clip ``a/b.flac`` takes its fields from ``a/b.json`` (same fields as a manifest line, minus
    ``audio``) or its caption from ``a/b.txt`` (one caption a line); a clip with neither gets no
    caption.

    Args:
        folder: the root folder, searched recursively.
        suffixes: audio file suffixes to take (lower case).

    Returns:
        The records sorted by path, keys relative to ``folder``.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ManifestError: a sidecar JSON is malformed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    records = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes):
        line: dict[str, Any] = {"audio": audio.relative_to(root).as_posix()}
        sidecar_json, sidecar_txt = audio.with_suffix(".json"), audio.with_suffix(".txt")
        if sidecar_json.is_file():
            try:
                fields = json.loads(sidecar_json.read_text(encoding="utf-8-sig"))
            except json.JSONDecodeError as error:
                raise ManifestError(f"{sidecar_json}: not valid JSON ({error.msg})") from error
            if not isinstance(fields, dict):
                raise ManifestError(f"{sidecar_json}: expected a JSON object")
            line.update({k: v for k, v in fields.items() if k != "audio"})
        elif sidecar_txt.is_file():
            captions = [c.strip() for c in sidecar_txt.read_text(encoding="utf-8-sig").splitlines()]
            line["caption"] = [c for c in captions if c]
        records.append(parse_record(line, root, str(audio)))
    return records
