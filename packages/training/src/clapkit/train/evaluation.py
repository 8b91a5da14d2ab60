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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clapkit.train.shares import OnError, map_files

__all__ = ["load_zero_shot_tasks", "zero_shot_evaluate"]


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
        on_error: ``"skip"`` leaves out clips that will not decode
            (``clapkit.train.shares.skip_bad_files``) and scores the rest; ``"raise"`` fails
            on the first.

    Returns:
        ``{task name: {metric: value, "score": value, "n_clips": clips scored, "skipped":
        {clip: reason}}}`` plus ``"zero_shot_score"`` (the mean score) when there is a task.
        ``skipped`` holds the task's unlabelled lines and undecodable files.
    """
    import torch

    from clapkit.core import accuracy, f1_score, mean_average_precision, zero_shot_scores

    clap = accelerator.unwrap_model(model)
    was_training = clap.training
    clap.eval()
    results: dict[str, Any] = {}
    with torch.no_grad():
        for data in tasks:
            task = data.task
            found = map_files(
                accelerator,
                [r.audio for r in data.records],
                lambda files: clap.embed_audio(files).cpu(),
                on_error=on_error,
            )
            kept = torch.tensor(found.kept, dtype=torch.long)
            skipped = dict(data.skipped)
            skipped.update(found.skipped)
            if not found.parts:
                raise ValueError(f"{task.name}: no clip could be embedded, e.g. {skipped}")
            labels = [task.label_text(name) for name in data.class_names]
            classes = clap.class_embeddings(labels, task.templates).cpu()
            multilabel = task.kind == "multilabel"
            scores = zero_shot_scores(
                torch.cat(found.parts), classes, clap.logit_scale_exp.cpu(), multilabel
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
