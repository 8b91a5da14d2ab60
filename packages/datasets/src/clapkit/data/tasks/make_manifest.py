"""``clapkit-make-manifest``: a task's split, read from its publisher's layout, as a manifest.

    clapkit-make-manifest clotho=/data/clotho --split train -o clotho-train.jsonl
    clapkit-make-manifest audiocaps=/data/audiocaps --split train -o audiocaps-train.jsonl
    clapkit-make-manifest esc50=/data/ESC-50-master -o esc50.jsonl     # the paper's test split

Each line is ``{"audio": path relative to the manifest, "caption": ..., "labels": [...]}``
(plus the record's extra fields: fold, YouTube id, ...), what ``recipes/pretrain_clap.py
--train-manifest`` and ``recipes/train_captioner.py --train-manifest`` read. ``--split train``
is the task's training split (Clotho ``development``, AudioCaps ``train``), ``--split test``
the paper's test split; any split name of the task is taken as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from clapkit.data.tasks.base import Task, TaskData, TaskFileNotFoundError, TaskLayoutError
from clapkit.data.tasks.registry import get_task

__all__ = ["load_split", "main", "parse_spec", "resolve_split", "split_manifests", "write_split"]


def parse_spec(spec: str) -> tuple[Task, Path]:
    """``"clotho=/data/clotho"`` -> the task and the folder.

    Args:
        spec: ``NAME=PATH``, a registered task's name and its folder.

    Returns:
        The task and the folder.

    Raises:
        ValueError: not ``NAME=PATH``.
        KeyError: an unknown task name (the known ones listed).
    """
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected NAME=PATH (e.g. clotho=/data/clotho), got {spec!r}")
    return get_task(name), Path(path)


def resolve_split(task: Task, split: str) -> str:
    """The task's split called ``split``; ``train`` and ``test`` also name its training split
    and the paper's test split.

    Args:
        task: the task.
        split: one of its split names, ``train`` or ``test``.

    Returns:
        The split name to load.

    Raises:
        KeyError: the task has no such split (its splits named), or no training split.
    """
    names = dict(task.splits)
    if split in names:
        return split
    if split == "test":
        return task.split
    if split == "train":
        if task.train_split is None:
            raise KeyError(
                f"task {task.name!r} has no training split (its splits: {list(names)}); "
                "the paper uses it for testing only"
            )
        return task.train_split
    raise KeyError(f"task {task.name!r} has splits {list(names)} (or train/test), not {split!r}")


def load_split(spec: str, split: str = "test") -> TaskData:
    """Read one split of a task from its publisher's layout.

    Args:
        spec: ``NAME=PATH``.
        split: a split of the task, ``train`` or ``test``.

    Returns:
        The task's data.

    Raises:
        ValueError, KeyError: see :func:`parse_spec` and :func:`resolve_split`.
        TaskFileNotFoundError, TaskLayoutError: the folder does not hold the layout.
    """
    task, root = parse_spec(spec)
    return task.load(root, split=resolve_split(task, split))


def write_split(data: TaskData, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as a manifest at ``path``, atomically (written aside, then renamed).

    Args:
        data: a loaded split.
        path: the manifest file (its folder is created).

    Returns:
        The manifest path.
    """
    path = Path(path)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data.write_manifest(aside)
    os.replace(aside, path)
    return path


def split_manifests(spec: str, folder: str | os.PathLike[str]) -> tuple[str, str]:
    """The training-split and test-split manifests of a captioning or retrieval task.

    ``train_captioner.py --data clotho=PATH`` trains on what this writes from Clotho
    ``development`` and tests on ``evaluation``; AudioCaps: ``train`` and ``test``.

    Args:
        spec: ``NAME=PATH``.
        folder: where ``{name}-{split}.jsonl`` go.

    Returns:
        The train and test manifest paths.

    Raises:
        KeyError: the task has no training split.
    """
    task, _ = parse_spec(spec)
    out = []
    for split in (resolve_split(task, "train"), task.split):
        data = load_split(spec, split)
        out.append(str(write_split(data, Path(folder) / f"{task.name}-{split}.jsonl")))
    return out[0], out[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``clapkit-make-manifest``).

    Args:
        argv: the arguments (``sys.argv[1:]`` by default).

    Returns:
        The exit status: 0, or 2 when the task, split or layout is wrong (the reason printed).
    """
    parser = argparse.ArgumentParser(
        prog="clapkit-make-manifest",
        description="Write a task's split, read from its publisher's layout, as a JSON Lines "
        "manifest (audio paths relative to it).",
    )
    parser.add_argument("task", metavar="NAME=PATH", help="a task and its folder: clotho=PATH")
    parser.add_argument(
        "--split", default="test", help="a split of the task, train or test (default: test)"
    )
    parser.add_argument("-o", "--output", help="the manifest (default: NAME-SPLIT.jsonl)")
    args = parser.parse_args(argv)
    try:
        data = load_split(args.task, args.split)
    except (ValueError, KeyError, TaskFileNotFoundError, TaskLayoutError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"clapkit-make-manifest: {message}", file=sys.stderr)
        return 2
    output = args.output or f"{data.task.name}-{data.split}.jsonl"
    path = write_split(data, output)
    for warning in data.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: {len(data)} clips of {data.task.name} {data.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
