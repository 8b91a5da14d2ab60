"""A labelled JSON-Lines manifest seen as a zero-shot classification task."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clapkit.data.manifest import ManifestError, read_manifest
from clapkit.data.tasks.base import SOUND_TEMPLATES, Task, TaskData


@dataclass(frozen=True)
class ManifestTask(Task):
    """A `Task` read from one manifest; ``skipped`` names the lines it left out, and why."""

    skipped: tuple[tuple[str, str], ...] = ()

    def load(self, root: str | os.PathLike[str], split: str | None = None) -> TaskData:
        """The manifest's records (``root`` must be a folder); ``TaskData.skipped`` filled."""
        return dataclasses.replace(super().load(root, split), skipped=self.skipped)


def manifest_task(
    path: str | os.PathLike[str],
    templates: Sequence[str] = (),
    *,
    name: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> Task:
    """A labelled manifest as a zero-shot `Task` (multilabel when a clip has several labels).

    ``task.load(anything)`` returns the manifest's records; the labels go into the templates
    unchanged and the classes are the sorted set of labels. With ``on_error="skip"`` a line
    without labels is left out: ``TaskData.skipped`` names it and a warning counts them.

    Args:
        path: the JSON Lines manifest (``labels`` on every line).
        templates: prompt templates with one ``{}``; the sound template when empty.
        name: the task's name; the manifest's file stem by default.
        on_error: ``"raise"``: a line without labels is an error; ``"skip"``: left out.

    Returns:
        The task.

    Raises:
        ManifestError: the manifest is malformed, or some lines have no label (named) and
            ``on_error="raise"``.
        ValueError: fewer than two classes, or an unknown ``on_error``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    records = read_manifest(path)
    unlabelled = [str(r.audio) for r in records if not r.labels]
    skipped: tuple[tuple[str, str], ...] = ()
    warnings: list[str] = []
    if unlabelled and on_error == "raise":
        raise ManifestError(
            f"{path}: {len(unlabelled)} clips have no labels (a zero-shot task needs them), "
            f"e.g. {unlabelled[:5]}; on_error='skip' leaves them out"
        )
    if unlabelled:
        records = [r for r in records if r.labels]
        skipped = tuple((clip, f"{path}: no labels") for clip in unlabelled)
        warnings.append(f"{path}: {len(unlabelled)} clips without labels left out")
    if not records:
        raise ValueError(f"{path}: no labelled clip to evaluate")
    classes = tuple(sorted({label for r in records for label in r.labels}))
    if len(classes) < 2:
        raise ValueError(f"{path}: zero-shot needs >= 2 classes, found {list(classes)}")
    multilabel = any(len(r.labels) > 1 for r in records)
    return ManifestTask(
        name=name or path.stem,
        title=name or path.stem,
        kind="multilabel" if multilabel else "multiclass",
        reader=lambda root, split: (list(records), classes, list(warnings)),
        skipped=skipped,
        splits=(("manifest", len(records)),),
        class_names=classes,
        templates=tuple(templates) or SOUND_TEMPLATES,
        label_text=str,
        metrics=("mAP",) if multilabel else ("accuracy",),
    )
