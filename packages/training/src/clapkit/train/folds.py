"""Classification data for fine-tuning, split into cross-validation folds; targets and scores.

Data comes from a task reader (``esc50=/data/ESC-50-master``, :mod:`clapkit.data.tasks`) or a
labelled manifest; :func:`cross_validation_folds` splits it by each clip's fold (the ``fold`` the
ESC-50 reader records, or any manifest field such as ``speaker``): train on the other folds,
test on one, every fold in turn::

    data = load_classification_data("esc50=/data/ESC-50-master")
    for fold in cross_validation_folds(data.records, "fold"):    # 1..5
        fold.name, len(fold.train), len(fold.test)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CrossValidation",
    "Fold",
    "classification_scores",
    "cross_validation_folds",
    "fold_of",
    "load_classification_data",
    "target_tensor",
]


def load_classification_data(source: str, templates: Sequence[str] = ()) -> Any:
    """A classification task's clips: ``NAME=PATH`` (a task reader) or a labelled manifest.

    Args:
        source: ``esc50=/data/ESC-50-master`` (any multiclass or multilabel task of
            :mod:`clapkit.data.tasks`, read from its official layout) or a ``.jsonl`` manifest
            whose lines carry ``labels``.
        templates: zero-shot prompt templates of a manifest task (default: the sound template).

    Returns:
        ``clapkit.data.tasks.TaskData`` (records, class names, warnings).

    Raises:
        SystemExit: a task that is not a classification task, or a missing manifest.
    """
    from clapkit.data.tasks import get_task, manifest_task

    name, sep, path = source.partition("=")
    if sep:
        task = get_task(name)
        if task.kind not in ("multiclass", "multilabel"):
            raise SystemExit(f"--data {name}: a {task.kind} task is not a classification task")
        return task.load(path)
    if not Path(source).is_file():
        raise SystemExit(f"--data {source}: no such manifest (or give NAME=PATH for a task)")
    return manifest_task(source, templates).load(Path(source).parent)


def fold_of(record: Any, field: str) -> str:
    """The fold a clip belongs to, as text.

    Read from the record's ``extra[field]`` (the ESC-50 reader's ``fold``, a manifest's
    ``speaker``...); for ``field == "fold"`` an ESC-50 file name ``{fold}-{src}-{take}-{target}``
    is a fallback.

    Args:
        record: a ``clapkit.data.ManifestRecord``.
        field: the field naming the fold.

    Returns:
        The fold's name.

    Raises:
        ValueError: the record has no such field (named with the clip).
    """
    value = record.extra.get(field)
    if value is None and field == "fold":
        parts = Path(record.audio).stem.split("-")
        if len(parts) == 4 and parts[0].isdigit():
            value = parts[0]
    if value is None:
        raise ValueError(
            f"clip {record.key or record.audio} has no {field!r} field to split folds by"
        )
    return str(value)


@dataclass(frozen=True)
class Fold:
    """One cross-validation rotation: the held-out fold's name and both record lists."""

    name: str
    train: tuple[Any, ...]
    test: tuple[Any, ...]


@dataclass
class CrossValidation:
    """Where a cross-validated run is, beside ``Progress`` (register it for checkpointing).

    Attributes:
        fold: index of the fold being trained.
        fold_start_step: the optimizer step at which this fold began (its schedule's origin).
        current: the fold's kept epoch record so far (``select`` last or best), or None.
        results: one record per finished fold (``fold``, ``epoch``, metric, ``score``...).
        zero_shot: the starting ClapModel's zero-shot score per fold name, if there was one.
    """

    fold: int = 0
    fold_start_step: int = 0
    current: dict[str, Any] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    zero_shot: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        """The fields as a dict (saved as JSON: ``clapkit.train.state``)."""
        return {
            "fold": self.fold,
            "fold_start_step": self.fold_start_step,
            "current": self.current,
            "results": list(self.results),
            "zero_shot": dict(self.zero_shot),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the fields saved by `state_dict`."""
        for name, value in state.items():
            setattr(self, name, value)


def _fold_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def cross_validation_folds(
    records: Sequence[Any], field: str, test_folds: Sequence[str] = ()
) -> list[Fold]:
    """Leave-one-fold-out splits: train on the other folds, test on one.

    Args:
        records: every clip (``ManifestRecord``).
        field: the fold field (see :func:`fold_of`).
        test_folds: the folds held out in turn; empty = every fold (sorted, numbers first).

    Returns:
        One :class:`Fold` per held-out fold, in the given (or sorted) order.

    Raises:
        ValueError: fewer than two folds, or a requested fold that no clip has.
    """
    by_fold: dict[str, list[Any]] = {}
    for record in records:
        by_fold.setdefault(fold_of(record, field), []).append(record)
    names = sorted(by_fold, key=_fold_key)
    if len(names) < 2:
        raise ValueError(f"cross-validation needs >= 2 folds of {field!r}, found {names}")
    unknown = [str(f) for f in test_folds if str(f) not in by_fold]
    if unknown:
        raise ValueError(f"test folds {unknown} not found; the {field!r} folds are {names}")
    chosen = [str(f) for f in test_folds] or names
    return [
        Fold(
            name=name,
            train=tuple(r for other in names if other != name for r in by_fold[other]),
            test=tuple(by_fold[name]),
        )
        for name in chosen
    ]


def target_tensor(
    labels: Sequence[Sequence[str]], class_index: Mapping[str, int], *, multilabel: bool
) -> Tensor:
    """Float targets ``[b, c]``: one-hot (multiclass) or multi-hot (multilabel).

    Args:
        labels: each clip's labels (a batch's ``labels``).
        class_index: class name -> output index.
        multilabel: allow several labels per clip.

    Returns:
        ``[b, c]`` float32.

    Raises:
        ValueError: an unknown label, or a multiclass clip without exactly one label.
    """
    out = torch.zeros(len(labels), len(class_index))
    for row, names in enumerate(labels):
        if not multilabel and len(names) != 1:
            raise ValueError(f"a multiclass clip needs exactly one label, got {list(names)}")
        for name in names:
            if name not in class_index:
                raise ValueError(f"label {name!r} is not one of the classes {sorted(class_index)}")
            out[row, class_index[name]] = 1.0
    return out


def classification_scores(logits: Tensor, targets: Tensor, *, multilabel: bool) -> dict[str, float]:
    """Accuracy (multiclass) or macro mAP (multilabel) of a test fold, plus ``score``.

    Args:
        logits: ``[n, c]``.
        targets: ``[n, c]`` one-hot or multi-hot.
        multilabel: which metric.

    Returns:
        ``{"accuracy" | "mAP": value, "score": value, "n_clips": n}``.
    """
    from clapkit.core import accuracy, mean_average_precision

    if multilabel:
        value = float(mean_average_precision(torch.sigmoid(logits), targets))
        return {"mAP": value, "score": value, "n_clips": int(targets.shape[0])}
    value = float(accuracy(logits, targets.argmax(dim=1)))
    return {"accuracy": value, "score": value, "n_clips": int(targets.shape[0])}
