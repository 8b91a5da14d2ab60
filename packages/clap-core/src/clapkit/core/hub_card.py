"""Hub model cards and uploads: ``huggingface_hub.ModelCard`` with real metadata.

`model_card` writes the card's YAML with ``ModelCardData``: licence, ``library_name: clapkit``,
``pipeline_tag``, tags, training datasets and the ``model-index`` evaluation results read from
``recipes/evaluate.py``'s ``metrics.json`` (task -> metrics as the paper names them).
`push_folder_to_hub` uploads a saved folder with its card through ``HfApi``, in one commit,
without writing into the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

__all__ = ["eval_results", "model_card", "push_folder_to_hub"]

# entries of a task's metrics that are bookkeeping, not scores
_NOT_SCORES = ("n_clips", "skipped")


def eval_results(
    metrics: Mapping[str, Any], *, task_type: str = "zero-shot-audio-classification"
) -> list[EvalResult]:
    """``model-index`` results of an evaluation's ``metrics.json``.

    Args:
        metrics: task -> {metric name: value} (``n_clips`` and ``skipped`` are left out, as is
            any non-numeric entry).
        task_type: the hub task of every result.

    Returns:
        One `EvalResult` per (task, metric), in the file's order.
    """
    results = []
    for task, scores in metrics.items():
        if not isinstance(scores, Mapping):
            continue
        for metric, value in scores.items():
            if (
                metric in _NOT_SCORES
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
            ):
                continue
            results.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=task,
                    dataset_name=task,
                    metric_type=metric,
                    metric_value=float(value),
                )
            )
    return results


def model_card(
    *,
    model_name: str,
    description: str,
    license: str = "mit",
    pipeline_tag: str = "zero-shot-audio-classification",
    tags: Sequence[str] = ("clap", "audio", "contrastive-learning"),
    datasets: Sequence[str] = (),
    metrics: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    base_model: str | None = None,
) -> ModelCard:
    """A model card with real metadata (no "More Information Needed").

    Args:
        model_name: the model's name (``model-index`` needs one).
        description: the card's body, Markdown (what the model is, how it was trained).
        license: an SPDX-style licence id the hub knows (``mit``, ``cc-by-4.0``, ...).
        pipeline_tag: the hub task.
        tags: hub tags.
        datasets: hub ids or names of the training data.
        metrics: an evaluation's ``metrics.json`` (its path or contents), or ``None``.
        base_model: the hub id the model was fine-tuned or converted from, if any.

    Returns:
        The card; ``card.save(folder / "README.md")`` or `push_folder_to_hub`.
    """
    table: Mapping[str, Any] = (
        json.loads(Path(metrics).read_text())
        if isinstance(metrics, (str, os.PathLike))
        else metrics or {}
    )
    results = eval_results(table, task_type=pipeline_tag)
    data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name="clapkit",
        pipeline_tag=pipeline_tag,
        tags=list(tags),
        datasets=list(datasets) or None,
        base_model=base_model,
        eval_results=results or None,
    )
    body = [f"# {model_name}", "", description.strip(), ""]
    if results:
        body += ["## Evaluation", "", "| task | metric | value |", "|---|---|---|"]
        body += [f"| {r.dataset_name} | {r.metric_type} | {r.metric_value:.4g} |" for r in results]
        body.append("")
    body += [
        "## Use",
        "",
        "```python",
        "from clapkit.core import ClapModel",
        "",
        'model = ClapModel.from_pretrained("<this repository>")',
        'probs = model.zero_shot(["dog.wav"], ["dog", "rain"])',
        "```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def push_folder_to_hub(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    card: ModelCard | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload clapkit model",
    api: HfApi | None = None,
) -> str:
    """Upload a saved model folder, with a card as its ``README.md``, in one hub commit.

    The folder is left as it is: the card goes up from memory (replacing the folder's own
    ``README.md`` in the upload); hidden files (``.name.partial``) stay behind.

    Args:
        folder: a ``save_pretrained`` folder.
        repo_id: ``"org/name"``; created when missing.
        card: the repository's ``README.md``, or ``None`` to upload the folder's own.
        private: create the repository private.
        token: a hub token (default: the logged-in one).
        commit_message: the commit's message.
        api: the ``HfApi`` to use (tests pass a fake).

    Returns:
        The URL of the commit.

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``config.json``.
    """
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: not a saved model folder")
    files = [
        f for f in sorted(path.rglob("*"))
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
    ]  # fmt: skip
    operations = [
        CommitOperationAdd(path_in_repo=f.relative_to(path).as_posix(), path_or_fileobj=str(f))
        for f in files
        if card is None or f.relative_to(path).as_posix() != "README.md"
    ]
    if card is not None:
        operations.append(CommitOperationAdd("README.md", str(card).encode()))
    hub = api or HfApi(token=token)
    hub.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = hub.create_commit(
        repo_id, operations=operations, commit_message=commit_message, repo_type="model"
    )
    return str(getattr(commit, "commit_url", commit))
