"""What a task is (``Task``), what loading one gives (``TaskData``), and the layout errors.

A task reader turns a dataset folder, laid out exactly as its publisher distributes it, into
``ManifestRecord``s: ``labels`` hold the dataset's own class ids (``"sea_waves"``), ``captions``
the reference captions, ``extra`` the split and fold. Prompt text is made from a class id by the
task's ``label_text`` and put into its templates, which use one placeholder: ``{}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from clapkit.data.manifest import ManifestRecord, write_manifest
from clapkit.data.tasks.lfs import lfs_pointer_message

TaskKind = Literal["multiclass", "multilabel", "retrieval", "captioning"]
KINDS: tuple[TaskKind, ...] = ("multiclass", "multilabel", "retrieval", "captioning")

# Prompt families of the CLAP 2022 paper, which the 2023 paper keeps (section 2.3).
SOUND_TEMPLATES = ("this is a sound of {}",)
EMOTION_TEMPLATES = ("this person is feeling {}",)
KEYWORD_TEMPLATES = ("{}",)
COUNT_TEMPLATES = ("{} persons speaking",)

RETRIEVAL_METRICS = (
    "t2a/R@1",
    "t2a/R@5",
    "t2a/R@10",
    "t2a/mAP@10",
    "a2t/R@1",
    "a2t/R@5",
    "a2t/R@10",
    "a2t/mAP@10",
)
CAPTION_METRICS = ("SPIDEr", "CIDEr-D", "SPICE", "BLEU-4", "ROUGE-L")


class TaskLayoutError(ValueError):
    """A dataset file is malformed; the message names the file and what was expected."""


class TaskFileNotFoundError(FileNotFoundError):
    """A file the dataset's layout needs is absent; the message names it and the layout."""


def humanize(label: str) -> str:
    """Default prompt text of a class id: ``"Sea_waves"`` -> ``"sea waves"``.

    Args:
        label: the dataset's class id.

    Returns:
        The id lower-cased, ``_`` turned into spaces, runs of spaces collapsed.
    """
    return " ".join(label.replace("_", " ").lower().split())


@dataclass(frozen=True)
class Task:
    """One evaluation task of the paper, bound to the reader of its dataset's official layout.

    Attributes:
        name: registry name (``"esc50"``).
        title: the name the paper's tables print (``"ESC50"``).
        kind: ``multiclass``, ``multilabel``, ``retrieval`` or ``captioning``.
        reader: ``reader(root, split) -> (records, class_names, warnings)``; use :meth:`load`.
        splits: the splits the reader knows, each with its published clip count; the first is
            the paper's test split (for k-fold datasets, every fold).
        class_names: class ids of the first split in class-index order; ``None`` for
            retrieval and captioning, and where the dataset ships its own vocabulary file
            (FSD50K, AudioSet): then ``TaskData.class_names`` has them.
        templates: prompt templates, ``{}`` marking where the class text goes.
        label_text: class id -> the text put into the templates.
        metrics: metric names as the paper names them, the headline first.
        chance: the metric of a random guess where the paper prints one (else ``1/C`` for
            multiclass tasks, ``None`` otherwise).
        paper: ``(row, value)`` pairs of the paper's results, rows such as
            ``"table1/HTSAT-22+GPT2"``, ``"table2/CLAP 2023"`` or ``"table2/CLAP 2023 t2a/R@1"``.
        missing_ok: clips may be absent from the download (YouTube-sourced sets): absent
            clips become warnings, not an error.
        download: where the publisher distributes it.
        license: the licence it is distributed under.
        layout: the folder layout :meth:`load` expects, one line.
        checked: the publisher's files the layout was checked against (repository and path,
            or archive and file); the tests copy their header and a few rows or file names.
        train_split: the split holding the publisher's training data (``None``: the task is
            test-only), what ``clapkit-make-manifest TASK=PATH --split train`` reads.
    """

    name: str
    title: str
    kind: TaskKind
    reader: Callable[[Path, str], tuple[list[ManifestRecord], tuple[str, ...], list[str]]]
    splits: tuple[tuple[str, int], ...]
    class_names: tuple[str, ...] | None = None
    templates: tuple[str, ...] = SOUND_TEMPLATES
    label_text: Callable[[str], str] = humanize
    metrics: tuple[str, ...] = ("accuracy",)
    chance: float | None = None
    paper: tuple[tuple[str, float], ...] = ()
    missing_ok: bool = False
    download: str = ""
    license: str = ""
    layout: str = ""
    checked: str = ""
    train_split: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.splits:
            raise ValueError(f"task {self.name!r}: needs at least one split")
        if self.train_split is not None and self.train_split not in dict(self.splits):
            raise ValueError(f"task {self.name!r}: train_split {self.train_split!r} not in splits")
        for template in self.templates:
            if template.count("{}") != 1 or template.replace("{}", "").count("{") > 0:
                raise ValueError(
                    f"task {self.name!r}: template {template!r} needs exactly one {{}}"
                )

    @property
    def split(self) -> str:
        """The paper's test split (the first of ``splits``)."""
        return self.splits[0][0]

    @property
    def expected_clips(self) -> int:
        """The published clip count of the paper's test split."""
        return self.splits[0][1]

    @property
    def chance_level(self) -> float | None:
        """``chance`` if the paper gives one, ``1/C`` for a multiclass task, else ``None``."""
        if self.chance is not None:
            return self.chance
        if self.kind == "multiclass" and self.class_names:
            return 1.0 / len(self.class_names)
        return None

    def prompts(self, class_names: Sequence[str] | None = None) -> list[list[str]]:
        """Prompt texts, one list (one text per template) for each class.

        Args:
            class_names: class ids; the task's own by default.

        Returns:
            ``prompts[c][k]`` = template ``k`` filled with the text of class ``c``.

        Raises:
            ValueError: the task has no classes (retrieval, captioning).
        """
        names = class_names if class_names is not None else self.class_names
        if not names:
            raise ValueError(f"task {self.name!r} ({self.kind}) has no classes to prompt")
        return [[t.format(self.label_text(name)) for t in self.templates] for name in names]

    def load(self, root: str | os.PathLike[str], split: str | None = None) -> TaskData:
        """Read the dataset from ``root``, laid out as its publisher distributes it.

        Args:
            root: the dataset's folder (see ``layout``).
            split: one of ``splits``; the paper's by default.

        Returns:
            The records, the class names and the warnings (a clip count that differs from the
            published one, clips absent from a YouTube-sourced download, ...).

        Raises:
            TaskFileNotFoundError: ``root`` or a file of the layout is missing; a listed clip is
                absent (unless ``missing_ok``).
            TaskLayoutError: a metadata file is malformed (file, line and expectation named);
                clips are Git LFS pointer files (named, with the fix); two clips have one key
                (their path relative to ``root`` without suffix: both named).
            KeyError: ``split`` is not one of ``splits``.
        """
        counts = dict(self.splits)
        split = self.split if split is None else split
        if split not in counts:
            raise KeyError(f"task {self.name!r} has splits {list(counts)}, not {split!r}")
        folder = Path(root)
        if not folder.is_dir():
            raise TaskFileNotFoundError(
                f"{self.title}: {folder} is not a folder; expected {self.layout}"
            )
        records, class_names, warnings = self.reader(folder, split)
        pointers = lfs_pointer_message(self.title, (r.audio for r in records))
        if pointers:
            raise TaskLayoutError(pointers)
        _check_keys(self.title, records)
        if len(records) != counts[split]:
            warnings.append(
                f"{self.title} {split}: {len(records)} clips found, {counts[split]} published"
            )
        return TaskData(self, split, folder, tuple(records), class_names, tuple(warnings))


def _check_keys(title: str, records: Sequence[ManifestRecord]) -> None:
    """Raise if two records share a key (``x.wav`` and ``x.flac`` side by side), naming both."""
    seen: dict[str, Path] = {}
    for clip in records:
        other = seen.setdefault(clip.key, clip.audio)
        if other != clip.audio:
            raise TaskLayoutError(
                f"{title}: {other} and {clip.audio} are one clip key {clip.key!r} (the path "
                "without suffix); keep one of them"
            )


@dataclass(frozen=True)
class TaskData:
    """A task's test clips as read from disk.

    Attributes:
        task: the task.
        split: the split read.
        root: the dataset folder.
        records: one record per clip (audio path, class ids in ``labels``, captions).
        class_names: class ids in class-index order (empty for retrieval and captioning).
        warnings: what differs from the publisher's description, for the report.
        skipped: ``(clip, reason)`` of the clips left out of ``records`` (a manifest line
            without labels read with ``on_error="skip"``; files that would not decode).
    """

    task: Task
    split: str
    root: Path
    records: tuple[ManifestRecord, ...]
    class_names: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.records)

    def prompts(self) -> list[list[str]]:
        """``task.prompts`` for this split's classes (``[c][k]``, ``k`` templates)."""
        return self.task.prompts(self.class_names)

    def targets(self) -> Tensor:
        """Class targets of every clip.

        Returns:
            ``[n]`` int64 class indices for a multiclass task, ``[n, c]`` float multi-hot for a
            multilabel one (``c = len(class_names)``).

        Raises:
            ValueError: the task has no classes, or a multiclass clip has not one label.
        """
        if not self.class_names:
            raise ValueError(f"task {self.task.name!r} ({self.task.kind}) has no class targets")
        index = {name: i for i, name in enumerate(self.class_names)}
        if self.task.kind == "multiclass":
            bad = [r.key for r in self.records if len(r.labels) != 1]
            if bad:
                raise ValueError(f"{self.task.name}: clips without exactly one label: {bad[:5]}")
            return torch.tensor([index[r.labels[0]] for r in self.records], dtype=torch.long)
        out = torch.zeros(len(self.records), len(self.class_names))
        for row, record in enumerate(self.records):
            for label in record.labels:
                out[row, index[label]] = 1.0
        return out

    def write_manifest(self, path: str | os.PathLike[str]) -> Path:
        """Write the records as a JSON Lines manifest (paths relative to it).

        Args:
            path: the manifest file.

        Returns:
            The manifest path.
        """
        return write_manifest(self.records, path)
