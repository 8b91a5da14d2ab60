"""Reading helpers the task readers share: required files, CSV/TSV with checked columns, clips.

Every error names the file (and line) and says what the publisher's layout has there.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import TaskFileNotFoundError, TaskLayoutError

WAV = (".wav",)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a")


def require(root: Path, relative: str, title: str, what: str) -> Path:
    """The path ``root/relative``, which must exist.

    Args:
        root: the dataset folder.
        relative: the file or folder inside it.
        title: the dataset's name, for the message.
        what: what the publisher's layout holds there.

    Returns:
        The path.

    Raises:
        TaskFileNotFoundError: naming the path and what was expected.
    """
    path = root / relative
    if not path.exists():
        raise TaskFileNotFoundError(f"{title}: {path} not found; expected {what}")
    return path


def read_table(
    path: Path,
    columns: Sequence[str],
    *,
    delimiter: str = ",",
    header: bool = True,
    comment: str | None = None,
) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV/TSV file whose columns must be ``columns``.

    Args:
        path: the file.
        columns: with ``header``, the columns the header must contain (others are kept);
            without, the names given to the leading fields (extra fields are an error only
            if fewer than ``len(columns)`` are present).
        delimiter: the field separator.
        header: whether the first (non-comment) line names the columns.
        comment: lines starting with this prefix are skipped.

    Returns:
        ``(line_number, row)`` pairs, values stripped of surrounding spaces.

    Raises:
        TaskFileNotFoundError: the file is missing.
        TaskLayoutError: the header lacks a column, or a row has too few fields.
    """
    if not path.is_file():
        raise TaskFileNotFoundError(f"{path} not found; expected a table with {list(columns)}")
    with path.open(encoding="utf-8", newline="") as handle:
        lines = [
            (number, text)
            for number, text in enumerate(handle, start=1)
            if text.strip() and not (comment and text.lstrip().startswith(comment))
        ]
    reader = csv.reader([text for _, text in lines], delimiter=delimiter, skipinitialspace=True)
    parsed = [[field.strip() for field in fields] for fields in reader]
    names = list(columns)
    body = list(zip([n for n, _ in lines], parsed, strict=True))
    if header:
        if not body:
            raise TaskLayoutError(f"{path}: empty; expected a header with {names}")
        names = body[0][1]
        absent = [c for c in columns if c not in names]
        if absent:
            raise TaskLayoutError(
                f"{path}:{body[0][0]}: header {names} lacks {absent}; expected {list(columns)}"
            )
        body = body[1:]
    rows = []
    for number, fields in body:
        if len(fields) < len(names):
            raise TaskLayoutError(
                f"{path}:{number}: {len(fields)} fields, expected {len(names)} ({names})"
            )
        rows.append((number, dict(zip(names, fields[: len(names)], strict=True))))
    return rows


def read_json(path: Path, what: str) -> Any:
    """A JSON file, decoded.

    Raises:
        TaskFileNotFoundError: the file is missing.
        TaskLayoutError: it is not JSON.
    """
    if not path.is_file():
        raise TaskFileNotFoundError(f"{path} not found; expected {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TaskLayoutError(f"{path}: not valid JSON ({error.msg}); expected {what}") from error


def as_int(value: str, where: str, name: str) -> int:
    """``int(value)``, or a ``TaskLayoutError`` naming ``where`` and the field."""
    try:
        return int(value)
    except ValueError:
        raise TaskLayoutError(f"{where}: {name} must be an integer, got {value!r}") from None


def check_label(label: str, classes: Iterable[str], where: str) -> str:
    """``label`` if it is one of ``classes``, else a ``TaskLayoutError`` listing them."""
    known = tuple(classes)
    if label not in known:
        raise TaskLayoutError(f"{where}: unknown class {label!r}; expected one of {list(known)}")
    return label


def record(
    root: Path,
    audio: Path,
    *,
    labels: Sequence[str] = (),
    captions: Sequence[str] = (),
    **extra: Any,
) -> ManifestRecord:
    """A record whose key is the clip's path relative to ``root``, without suffix."""
    try:
        key = audio.relative_to(root).with_suffix("").as_posix()
    except ValueError:
        key = audio.with_suffix("").as_posix()
    return ManifestRecord(
        audio=audio, captions=tuple(captions), labels=tuple(labels), key=key, extra=dict(extra)
    )


def audio_files(folder: Path, suffixes: Sequence[str] = WAV) -> list[Path]:
    """Audio files under ``folder`` (recursively), sorted; suffixes compared in lower case."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


class ClipIndex:
    """The audio files under a folder, found by file stem (YouTube-sourced sets name a clip by
    its id wherever the user's download put it).

    Two files with one stem in different folders are not shadowed silently: looking that stem
    up raises an error naming both.

    Args:
        root: the folder searched recursively.
        suffixes: the audio suffixes, compared in lower case.
    """

    def __init__(self, root: Path, suffixes: Sequence[str] = AUDIO_SUFFIXES) -> None:
        self.root = root
        self.paths: dict[str, list[Path]] = {}
        for path in audio_files(root, suffixes):
            self.paths.setdefault(path.stem, []).append(path)

    def find(self, stems: Iterable[str], title: str) -> Path | None:
        """The file of the first of ``stems`` present under the root.

        Args:
            stems: candidate file stems, in order of preference.
            title: the dataset's name, for the message.

        Returns:
            The path, or ``None`` when no candidate is present.

        Raises:
            TaskLayoutError: the stem found names two or more files (all named).
        """
        for stem in stems:
            found = self.paths.get(stem, [])
            if len(found) > 1:
                names = [p.relative_to(self.root).as_posix() for p in found]
                raise TaskLayoutError(
                    f"{title}: {len(found)} files under {self.root} have the stem {stem!r}: "
                    f"{names}; keep one (which clip is meant is ambiguous)"
                )
            if found:
                return found[0]
        return None


def keep_present(
    records: list[ManifestRecord], title: str, missing_ok: bool, warnings: list[str]
) -> list[ManifestRecord]:
    """The records whose audio file exists.

    Args:
        records: the records the metadata lists.
        title: the dataset's name, for messages.
        missing_ok: absent clips are expected (YouTube-sourced sets): warn and drop them.
        warnings: where the warning goes.

    Returns:
        The present records, in order.

    Raises:
        TaskFileNotFoundError: a clip is absent and not ``missing_ok``; names the first few.
    """
    present = [r for r in records if r.audio.is_file()]
    absent = [str(r.audio) for r in records if not r.audio.is_file()]
    if absent and not missing_ok:
        raise TaskFileNotFoundError(
            f"{title}: {len(absent)} clips listed in the metadata are absent, e.g. {absent[:3]}"
        )
    if absent:
        warnings.append(
            f"{title}: {len(absent)} of {len(records)} listed clips are absent from the "
            f"download (skipped), e.g. {absent[:3]}"
        )
    return present
