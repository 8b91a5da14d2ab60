"""Per-epoch zero-shot evaluation of a training run, through clap-core's one zero-shot path.

The tasks come from labelled manifests (one task each, file stem = name) and from the paper's
task readers (``NAME=PATH``, :mod:`clapkit.data.tasks`, official layouts)::

    tasks = load_zero_shot_tasks(["heldout.jsonl"], ["esc50=/data/ESC-50-master"],
                                 template="this is a sound of {}")
    results = zero_shot_evaluate(accelerator, model, tasks)
    results["esc50"]["accuracy"], results["zero_shot_score"]     # the mean of the tasks' scores

The numbers are those of ``recipes/evaluate.py`` and ``ClapModel.zero_shot``: ``embed_audio``
on the files (long clips = the mean of their window embeddings), ``class_embeddings``
(template ensemble), ``zero_shot_scores``, then the task's headline metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

__all__ = ["FileResults", "load_zero_shot_tasks", "skip_bad_files", "zero_shot_evaluate"]

T = TypeVar("T")
OnError = Literal["raise", "skip"]


@dataclass
class FileResults(Generic[T]):
    """What :func:`skip_bad_files` gives: the chunks' results and which files they cover.

    Attributes:
        parts: ``compute``'s result for each chunk of good files, in order.
        kept: indices (into the paths given) of the files the parts cover, in order.
        skipped: ``{path: reason}`` of the files left out.
    """

    parts: list[T] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def skip_bad_files(
    compute: Callable[[list[Any]], T],
    paths: Sequence[Any],
    *,
    on_error: OnError = "raise",
    chunk: int = 128,
    done: Callable[[int], None] | None = None,
) -> FileResults[T]:
    """Run ``compute`` over ``paths`` in chunks; with ``on_error="skip"``, leave bad files out.

    A chunk whose ``compute`` raises ``clapkit.audio.AudioLoadError`` for one of its files is
    run again without that file (the error names it), until it passes: the results are those
    of the good files alone, and ``skipped`` says why each other file was left out.

    Args:
        compute: a list of files -> a result for them (embeddings ``[n, d]``, captions).
        paths: the files.
        on_error: ``"raise"`` re-raises the first bad file's error; ``"skip"`` leaves it out.
        chunk: files per ``compute`` call.
        done: called with the number of files finished after each chunk (a progress bar).

    Returns:
        The chunks' results, the kept indices and the skipped files.

    Raises:
        clapkit.audio.AudioLoadError: a bad file and ``on_error="raise"``, or an error that
            names no file of the chunk.
        ValueError: an unknown ``on_error`` or ``chunk < 1``.
    """
    from clapkit.audio import AudioLoadError

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    out: FileResults[T] = FileResults()
    for start in range(0, len(paths), chunk):
        batch = list(range(start, min(start + chunk, len(paths))))
        while batch:
            try:
                result = compute([paths[i] for i in batch])
            except AudioLoadError as error:
                bad = [i for i in batch if str(paths[i]) == error.source]
                if on_error == "raise" or not bad:
                    raise
                out.skipped[str(paths[bad[0]])] = error.cause
                batch.remove(bad[0])
                continue
            out.parts.append(result)
            out.kept.extend(batch)
            break
        if done is not None:
            done(min(start + chunk, len(paths)) - start)
    return out


def load_zero_shot_tasks(
    manifests: Sequence[str],
    task_specs: Sequence[str],
    *,
    template: str,
    on_error: OnError = "raise",
) -> list[Any]:
    """Read the evaluation tasks of a run.

    Args:
        manifests: labelled JSON Lines manifests (``labels`` on every line); paths inside are
            relative to the manifest.
        task_specs: paper tasks as ``NAME=PATH`` (``esc50=/data/ESC-50-master``).
        template: the prompt of the manifest tasks, ``{}`` marking the label.
        on_error: ``"skip"`` leaves out manifest lines without labels (``TaskData.skipped``).

    Returns:
        ``clapkit.data.tasks.TaskData`` of every task, manifests first.

    Raises:
        SystemExit: a spec without ``=``, or a task that is not zero-shot (retrieval,
            captioning).
        KeyError: an unknown task name (from ``get_task``).
    """
    from clapkit.data.tasks import get_task, manifest_task

    tasks = [
        manifest_task(m, [template], on_error=on_error).load(Path(m).parent) for m in manifests
    ]
    for spec in task_specs:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"--eval-task wants NAME=PATH, got {spec!r}")
        task = get_task(name)
        if task.kind not in ("multiclass", "multilabel"):
            raise SystemExit(f"--eval-task {name}: a {task.kind} task is not a zero-shot task")
        tasks.append(task.load(path))
    return tasks


def zero_shot_evaluate(
    accelerator: Any, model: Any, tasks: Sequence[Any], *, on_error: OnError = "raise"
) -> dict[str, Any]:
    """Zero-shot score of every task and their mean; each process embeds a share of the clips.

    Call it on every process. The model is put in eval mode and back.

    Args:
        accelerator: the run's accelerator.
        model: a (possibly prepared) ``ClapModel``.
        tasks: from :func:`load_zero_shot_tasks`.
        on_error: ``"skip"`` leaves out clips that will not decode (see :func:`skip_bad_files`)
            and scores the rest; ``"raise"`` fails on the first.

    Returns:
        ``{task name: {metric: value, "score": value, "n_clips": clips scored, "skipped":
        {clip: reason}}}`` plus ``"zero_shot_score"`` (the mean score) when there is a task.
        ``skipped`` holds the task's unlabelled lines and undecodable files.
    """
    import torch
    from accelerate.utils import gather_object  # type: ignore[import-untyped]

    from clapkit.core import accuracy, f1_score, mean_average_precision, zero_shot_scores

    clap = accelerator.unwrap_model(model)
    was_training = clap.training
    clap.eval()
    results: dict[str, Any] = {}
    with torch.no_grad():
        for data in tasks:
            task = data.task
            indexed = list(enumerate(r.audio for r in data.records))
            with accelerator.split_between_processes(indexed) as share:
                found = skip_bad_files(
                    lambda files: clap.embed_audio(files).cpu(),
                    [path for _, path in share],
                    on_error=on_error,
                )
                part = (
                    torch.cat(found.parts) if found.parts else None,
                    [share[i][0] for i in found.kept],
                    found.skipped,
                )
            parts = gather_object([part])
            embeddings = [p[0] for p in parts if p[0] is not None]
            kept = torch.tensor([i for p in parts for i in p[1]], dtype=torch.long)
            skipped = dict(data.skipped)
            for p in parts:
                skipped.update(p[2])
            if not embeddings:
                raise ValueError(f"{task.name}: no clip could be embedded, e.g. {skipped}")
            labels = [task.label_text(name) for name in data.class_names]
            classes = clap.class_embeddings(labels, task.templates).cpu()
            multilabel = task.kind == "multilabel"
            scores = zero_shot_scores(
                torch.cat(embeddings), classes, clap.logit_scale_exp.cpu(), multilabel
            )
            metric = task.metrics[0]
            targets = data.targets()[kept]
            if not multilabel:
                value = accuracy(scores, targets)
            elif metric == "F1":
                value = f1_score(scores, targets, top_k="labels")
            else:
                value = mean_average_precision(scores, targets)
            results[task.name] = {
                metric: value,
                "score": value,
                "n_clips": len(kept),
                "skipped": skipped,
            }
    clap.train(was_training)
    if tasks:
        total = sum(results[t.task.name]["score"] for t in tasks)
        results["zero_shot_score"] = total / len(tasks)
    return results
