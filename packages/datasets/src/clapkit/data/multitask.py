"""Multi-task manifests for audio language model pretraining (Pengi, HTSAT-22).

One line per (clip, task): ``{"audio": "clips/a.flac", "task": "esc50", "prompt": "this is a
sound of", "answer": "dog"}`` plus any other fields (kept in ``extra``); paths are relative to the
manifest. Builders turn the training data of labelled, captioned and question-answer datasets
into such records (the answer of a classification is its class text, of a captioning a caption,
of a QA pair the answer); :class:`WeightedTaskSampler` draws an epoch's clips with a share per
task, seeded by ``(seed, epoch)`` so that a resumed run draws the same order::

    records = classification_records(train, task="esc50", prompt="this is a sound of")
    records += caption_records(audiocaps, task="audiocaps", prompt="generate audio caption")
    write_multitask_manifest(records, "data/pengi/train.jsonl")
    data = MultiTaskDataset(read_multitask_manifest("data/pengi/train.jsonl"), frontend, train=True)
    sampler = WeightedTaskSampler(data.tasks(), {"esc50": 1.0, "audiocaps": 3.0}, seed=0)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch.utils.data import Dataset, Sampler

from clapkit.audio import FrontendConfig
from clapkit.data.buffers import BatchBuffers, stack_into
from clapkit.data.dataset import ClipLoader, OnError, SkippedItem, item_generator
from clapkit.data.epoch import SharedEpoch, SharedEpochMixin
from clapkit.data.manifest import ManifestError, ManifestRecord, read_json_lines

__all__ = [
    "MultiTaskCollator",
    "MultiTaskDataset",
    "MultiTaskExample",
    "MultiTaskRecord",
    "WeightedTaskSampler",
    "caption_records",
    "classification_records",
    "qa_records",
    "read_multitask_manifest",
    "task_records",
    "write_multitask_manifest",
]

FIELDS = ("audio", "task", "prompt", "answer")
SAMPLER_STREAM = 2**31 - 1
"""The ``item_generator`` index of the sampler's own draws (no dataset item has it)."""


@dataclass(frozen=True)
class MultiTaskRecord:
    """One (clip, task) pair of a multi-task manifest.

    Attributes:
        audio: absolute path of the audio file.
        task: the task's name (what sampling weights refer to).
        prompt: the text the language model reads after the audio prefix ("" = none).
        answer: the text it must generate.
        key: a unique name for the pair (default ``task/clip path without suffix``).
        extra: every other field of the line, unchanged.
    """

    audio: Path
    task: str
    prompt: str
    answer: str
    key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The record as a manifest line, the audio path relative to ``relative_to`` if given."""
        audio = (
            self.audio if relative_to is None else Path(os.path.relpath(self.audio, relative_to))
        )
        line = {"audio": audio.as_posix(), "task": self.task, "prompt": self.prompt}
        return {**line, "answer": self.answer, "key": self.key, **self.extra}


def _parse_line(line: Any, root: Path, where: str) -> MultiTaskRecord:
    if not isinstance(line, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(line).__name__}")
    for name in FIELDS:
        if not isinstance(line.get(name), str):
            got = "missing" if name not in line else f"{type(line[name]).__name__} {line[name]!r}"
            raise ManifestError(f"{where}: {name!r} must be a string ({got})")
    for name in ("audio", "task", "answer"):
        if not line[name].strip():
            raise ManifestError(f"{where}: {name!r} is empty")
    path = Path(line["audio"])
    extra = {k: v for k, v in line.items() if k not in (*FIELDS, "key")}
    key = str(line.get("key") or f"{line['task']}/{path.with_suffix('').as_posix()}")
    return MultiTaskRecord(
        audio=path if path.is_absolute() else root / path, task=line["task"],
        prompt=line["prompt"], answer=line["answer"], key=key, extra=extra,
    )  # fmt: skip


def read_multitask_manifest(path: str | os.PathLike[str]) -> list[MultiTaskRecord]:
    """Read a multi-task JSON Lines manifest; blank lines are ignored.

    Args:
        path: the manifest file.

    Returns:
        The records in file order.

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: ``file:line``: not JSON, a field of ``audio, task, prompt, answer``
            missing, not a string or empty (the prompt may be empty), or a repeated key.
    """
    records = read_json_lines(path, _parse_line, what="multi-task manifest")
    if not records:
        raise ManifestError(f"{path}: no record")
    return records


def write_multitask_manifest(
    records: Iterable[MultiTaskRecord], path: str | os.PathLike[str], *, relative: bool = True
) -> Path:
    """Write records as JSON Lines (audio paths relative to the manifest's folder by default).

    Raises:
        ValueError: two records share a key (named).
    """
    manifest = Path(path)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    root = manifest.parent.resolve() if relative else None
    lines, seen = [], set()
    for record in records:
        if record.key in seen:
            raise ValueError(f"two records share the key {record.key!r}")
        seen.add(record.key)
        lines.append(json.dumps(record.to_json(root), ensure_ascii=False) + "\n")
    manifest.write_text("".join(lines), encoding="utf-8")
    return manifest


# -- builders ----------------------------------------------------------------------------------
def _key(task: str, record: ManifestRecord, suffix: str = "") -> str:
    name = record.key or record.audio.with_suffix("").as_posix()
    return f"{task}/{name.lstrip('/')}{suffix}"  # a manifest of absolute paths: "task/abs/path"


def classification_records(
    records: Iterable[ManifestRecord],
    *,
    task: str,
    prompt: str,
    label_text: Callable[[str], str] = str,
    separator: str = ", ",
) -> list[MultiTaskRecord]:
    """Labelled clips as (clip, prompt, class text): the answer names the clip's classes.

    Args:
        records: the training clips, their class ids in ``labels``.
        task: the task's name.
        prompt: e.g. ``"this is a sound of"``.
        label_text: class id -> its text (a ``clapkit.data.tasks`` task's ``label_text``).
        separator: joins several labels of a multilabel clip, in the clip's order.

    Returns:
        One record per clip.

    Raises:
        ValueError: a clip without a label (named).
    """
    out = []
    for record in records:
        if not record.labels:
            raise ValueError(f"{task}: clip {record.key or record.audio} has no label")
        answer = separator.join(label_text(label) for label in record.labels)
        out.append(MultiTaskRecord(record.audio, task, prompt, answer, _key(task, record)))
    return out


def caption_records(
    records: Iterable[ManifestRecord],
    *,
    task: str,
    prompt: str = "generate audio caption",
    every_caption: bool = True,
) -> list[MultiTaskRecord]:
    """Captioned clips as (clip, prompt, caption).

    Args:
        records: the training clips with their captions.
        task: the task's name.
        prompt: Pengi's captioning prompt by default.
        every_caption: one record per caption (``key#j``); else the first caption only.

    Returns:
        The records.

    Raises:
        ValueError: a clip without a caption (named).
    """
    out = []
    for record in records:
        if not record.captions:
            raise ValueError(f"{task}: clip {record.key or record.audio} has no caption")
        captions = record.captions if every_caption else record.captions[:1]
        for j, caption in enumerate(captions):
            key = _key(task, record, f"#{j}" if every_caption else "")
            out.append(MultiTaskRecord(record.audio, task, prompt, caption, key))
    return out


def qa_records(
    records: Iterable[ManifestRecord],
    *,
    task: str,
    template: str = "question: {}",
    question: str = "question",
    answer: str = "answer",
) -> list[MultiTaskRecord]:
    """Question-answer pairs (Clotho-AQA) as (clip, question prompt, answer).

    Args:
        records: one record per pair, question and answer in ``extra`` (manifest fields).
        task: the task's name.
        template: the prompt, ``{}`` = the question.
        question: the field holding the question.
        answer: the field holding the answer.

    Returns:
        One record per pair (keys ``task/clip#n`` for the n-th pair of a clip).

    Raises:
        ValueError: a pair whose question or answer is missing or not a string (named).
    """
    out, count = [], dict[str, int]()
    for record in records:
        q, a = record.extra.get(question), record.extra.get(answer)
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
            raise ValueError(
                f"{task}: clip {record.key or record.audio} needs string fields {question!r} "
                f"and {answer!r}, got {q!r} and {a!r}"
            )
        n = count[record.key] = count.get(record.key, -1) + 1
        key = _key(task, record, f"#{n}")
        out.append(MultiTaskRecord(record.audio, task, template.format(q), a, key))
    return out


def task_records(data: Any, *, prompt: str, task: str | None = None) -> list[MultiTaskRecord]:
    """Records of a split read by a ``clapkit.data.tasks`` reader (``Task.load(root, split)``).

    Classification tasks answer with the task's own class text (``label_text``), captioning and
    retrieval tasks with every caption.

    Args:
        data: a ``clapkit.data.tasks.TaskData``.
        prompt: the task's prompt.
        task: the name in the manifest (default: the task's registry name).

    Returns:
        The records.
    """
    name = task or data.task.name
    if data.task.kind in ("multiclass", "multilabel"):
        return classification_records(
            data.records, task=name, prompt=prompt, label_text=data.task.label_text
        )
    return caption_records(data.records, task=name, prompt=prompt)


# -- loading and sampling ----------------------------------------------------------------------
class MultiTaskExample(TypedDict):
    """One loaded pair; ``waveform`` is ``[t]`` float32 at the front end's rate."""

    waveform: torch.Tensor
    task: str
    prompt: str
    answer: str
    key: str


class MultiTaskDataset(SharedEpochMixin, Dataset):
    """Multi-task records loaded to an audio encoder's front end (see ``ClipLoader``).

    Item ``i`` of epoch ``e`` is cropped with the generator of ``(seed, e, i)``. The epoch
    (``set_epoch``) is shared with the DataLoader's workers, persistent ones included
    (:class:`clapkit.data.SharedEpoch`).

    Args:
        records: the pairs.
        frontend: the encoder's front end.
        train: random crops (and placement of short clips with ``shift_short_clips``).
        seed: the run's seed.
        on_error: bad audio skipped (``"skip"``, default in training) or fatal.
        cache_audio: keep decoded audio in memory (a clip shared by tasks is decoded once).
        shift_short_clips: see ``ClipLoader``.
    """

    def __init__(
        self,
        records: Sequence[MultiTaskRecord],
        frontend: FrontendConfig,
        *,
        train: bool,
        seed: int = 0,
        on_error: OnError | None = None,
        cache_audio: bool = False,
        shift_short_clips: bool = False,
    ) -> None:
        self.records = list(records)
        self.loader = ClipLoader(
            frontend, train=train, on_error=on_error or ("skip" if train else "raise"),
            cache_audio=cache_audio, shift_short_clips=shift_short_clips,
        )  # fmt: skip
        self.seed, self.shared_epoch = seed, SharedEpoch()

    def tasks(self) -> list[str]:
        """The task of every record, in record order (for :class:`WeightedTaskSampler`)."""
        return [r.task for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> MultiTaskExample | SkippedItem:
        record = self.records[index]
        generator = item_generator(self.seed, self.epoch if self.loader.train else 0, index)
        # only the crop's frames are decoded (the crop whole-clip decoding would cut)
        wave = self.loader.load(record.audio, str(record.audio), generator)
        if isinstance(wave, SkippedItem):
            return SkippedItem(key=record.key, source=str(record.audio), reason=wave.reason)
        return MultiTaskExample(
            waveform=wave, task=record.task, prompt=record.prompt, answer=record.answer,
            key=record.key,
        )  # fmt: skip


class MultiTaskCollator:
    """Batches pairs: ``waveform`` [b, t], ``prompts``, ``answers``, ``tasks``, ``keys`` and
    ``skipped`` (the ``SkippedItem``s dropped from this batch).

    Args:
        buffers: shared-memory buffers the workers reuse for ``waveform``
            (:class:`~clapkit.data.BatchBuffers`; give every batch back with
            :func:`~clapkit.data.give_back`), or ``None`` for fresh memory per batch.
    """

    def __init__(self, *, buffers: BatchBuffers | None = None) -> None:
        self.buffers = buffers

    def __call__(self, items: Sequence[MultiTaskExample | SkippedItem]) -> dict[str, Any]:
        good = [item for item in items if not isinstance(item, SkippedItem)]
        batch: dict[str, Any] = {
            **{f"{name}s": [i[name] for i in good] for name in ("prompt", "answer", "task", "key")},
            "skipped": [item for item in items if isinstance(item, SkippedItem)],
        }
        stack_into(batch, [i["waveform"] for i in good], self.buffers)
        return batch


class WeightedTaskSampler(Sampler[int]):
    """An epoch of indices where each task has a share set by its weight.

    Each draw picks a task with probability ``weight / sum(weights)``, then the task's next
    item from a shuffled order of its items (reshuffled when used up, so no item repeats
    before every item of its task came once). Everything is drawn from a generator seeded by
    ``(seed, epoch)``: the same epoch gives the same order in every process and after a resume.
    Under ``accelerate.prepare`` the batches of this order are split among processes.

    Args:
        tasks: the task of every dataset item (``MultiTaskDataset.tasks()``).
        weights: task -> weight (> 0 to draw it, 0 to leave it out); ``None``: each task's
            share is its number of items (a plain shuffle's share).
        num_samples: draws per epoch (default: the number of items).
        seed: the run's seed.

    Raises:
        ValueError: no items, a weight for a task that has no item, a task without a weight,
            a negative weight or weights that sum to zero.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float] | None = None,
        *,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if not tasks:
            raise ValueError("no items to sample")
        self.items: dict[str, list[int]] = {}
        for index, task in enumerate(tasks):
            self.items.setdefault(task, []).append(index)
        if weights is None:
            weights = {task: float(len(items)) for task, items in self.items.items()}
        unknown = sorted(set(weights) - set(self.items))
        unweighted = sorted(set(self.items) - set(weights))
        if unknown or unweighted:
            raise ValueError(
                f"task weights {dict(weights)} do not fit the data's tasks {sorted(self.items)}: "
                f"no item for {unknown}, no weight for {unweighted}"
            )
        negative = {t: w for t, w in weights.items() if w < 0}
        if negative or sum(weights.values()) <= 0:
            raise ValueError(f"task weights must be >= 0 and not all 0, got {dict(weights)}")
        self.names = sorted(self.items)
        self.probabilities = torch.tensor([float(weights[t]) for t in self.names])
        self.probabilities /= self.probabilities.sum()
        self.num_samples = len(tasks) if num_samples is None else num_samples
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order is drawn (a plain attribute: a sampler is iterated in
        the main process, never in a DataLoader worker)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = item_generator(self.seed, self.epoch, SAMPLER_STREAM)
        picks = torch.multinomial(
            self.probabilities, self.num_samples, replacement=True, generator=generator
        ).tolist()
        orders: dict[int, list[int]] = {}
        for choice in range(len(self.names)):
            items = self.items[self.names[choice]]
            needed = picks.count(choice)
            order: list[int] = []
            while len(order) < needed:
                order += [items[i] for i in torch.randperm(len(items), generator=generator)]
            orders[choice] = order[:needed][::-1]  # popped from the end, in drawn order
        return iter([orders[choice].pop() for choice in picks])
