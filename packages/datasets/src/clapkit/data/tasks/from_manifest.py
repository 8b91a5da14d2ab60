"""A labelled JSON-Lines manifest seen as a zero-shot classification task."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from clapkit.data.manifest import ManifestError, read_manifest
from clapkit.data.tasks.base import SOUND_TEMPLATES, Task


def manifest_task(
    path: str | os.PathLike[str], templates: Sequence[str] = (), *, name: str | None = None
) -> Task:
    """A labelled manifest as a zero-shot `Task` (multilabel when a clip has several labels).

    ``task.load(anything)`` returns the manifest's records; the labels go into the templates
    unchanged and the classes are the sorted set of labels.

    Args:
        path: the JSON Lines manifest (``labels`` on every line).
        templates: prompt templates with one ``{}``; the sound template when empty.
        name: the task's name; the manifest's file stem by default.

    Returns:
        The task.

    Raises:
        ManifestError: the manifest is malformed, or some lines have no label (named).
        ValueError: fewer than two classes.
    """
    path = Path(path)
    records = read_manifest(path)
    unlabelled = [r.key for r in records if not r.labels]
    if unlabelled:
        raise ManifestError(
            f"{path}: {len(unlabelled)} clips have no labels (a zero-shot task needs them), "
            f"e.g. {unlabelled[:5]}"
        )
    classes = tuple(sorted({label for r in records for label in r.labels}))
    if len(classes) < 2:
        raise ValueError(f"{path}: zero-shot needs >= 2 classes, found {list(classes)}")
    multilabel = any(len(r.labels) > 1 for r in records)
    return Task(
        name=name or path.stem,
        title=name or path.stem,
        kind="multilabel" if multilabel else "multiclass",
        reader=lambda root, split: (list(records), classes, []),
        splits=(("manifest", len(records)),),
        class_names=classes,
        templates=tuple(templates) or SOUND_TEMPLATES,
        label_text=str,
        metrics=("mAP",) if multilabel else ("accuracy",),
    )
