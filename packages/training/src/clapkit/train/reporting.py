"""A run's report: metrics.json, report.md, history.csv, curves.png and the saved model's card.

History rows are one mapping per epoch: scalar columns (``epoch``, ``step``, ``train_loss``,
``lr``, ``seconds``, throughput figures...) and, per evaluation task, a mapping with at least
``score`` (``{"esc50": {"accuracy": 0.71, "score": 0.71}}``)::

    write_report(out, title="pretrain_clap report", summary=["audio `cnn14` + text ..."],
                 history=history, best=best, skipped=skipped)
    write_model_card(out / "best", recipe="pretrain_clap.py", preset="demo", ...)
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "flatten",
    "plot_curves",
    "push_with_card",
    "write_history_csv",
    "write_model_card",
    "write_report",
]

THROUGHPUT_COLUMNS = (
    ("samples_per_s", "samples/s", "{:.1f}"),
    ("data_wait_s", "data wait s/step", "{:.3f}"),
    ("compute_s", "compute s/step", "{:.3f}"),
    ("tflops", "TFLOP/s", "{:.3g}"),
    ("mfu", "MFU", "{:.1%}"),
)


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested record as ``{"a/b": value}`` (for trackers and CSV).

    Args:
        record: e.g. one history row.
        prefix: prepended to every key.

    Returns:
        The flat mapping; non-numeric leaves are dropped.
    """
    flat: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def task_names(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The evaluation tasks of a history (the keys whose values are mappings with a score)."""
    names = {k for r in history for k, v in r.items() if isinstance(v, Mapping) and "score" in v}
    return sorted(names)


def write_history_csv(path: str | Path, history: Sequence[Mapping[str, Any]]) -> None:
    """One row per epoch, every numeric leaf a column (``esc50/accuracy``, ``samples_per_s``).

    Args:
        path: the CSV file.
        history: the epoch rows.
    """
    rows = [flatten(r) for r in history]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else fmt.format(value)
    )


def write_report(
    out: str | Path,
    *,
    title: str,
    summary: Sequence[str],
    history: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any] | None,
    skipped: Any = None,
    extra: Mapping[str, Any] | None = None,
    score_column: str | None = "zero-shot score",
    loss_title: str = "contrastive loss",
    score_title: str = "zero-shot",
    score_range: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """Write ``metrics.json``, ``report.md``, ``history.csv`` and ``curves.png`` into ``out``.

    Args:
        out: the run folder.
        title: the report's heading.
        summary: lines under the heading (model, data, seed, the command).
        history: the epoch rows (see the module docstring).
        best: the kept epoch's row plus its ``score``, or None.
        skipped: a ``clapkit.data.SkippedFiles`` (``count``, ``reasons``, ``state_dict()``;
            ``summary()`` when it has one: skips per epoch and in total, times per file).
        extra: more top-level entries for ``metrics.json`` (e.g. ``flops_per_sample``).
        score_column: the table's column of the rows' ``zero_shot_score`` (the mean over the
            tasks), or None for a recipe without one (the captioner: its task is the score).
        loss_title: the loss plot's title (``"captioning loss"``).
        score_title: the score plot's title (``"SPIDEr (CIDEr-D without Java)"``).
        score_range: the score axis (None: fit to the values, e.g. CIDEr-D above 1).
    """
    out = Path(out)
    skipped_state = skipped.state_dict() if skipped is not None else {"count": 0, "reasons": {}}
    metrics = {
        "epochs": list(history),
        "best": best,
        "skipped_files": skipped_state,
        **(extra or {}),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    tasks = task_names(history)
    shown = [c for c in THROUGHPUT_COLUMNS if any(c[0] in r for r in history)]
    lines = [f"# {title}", "", *summary, ""]
    mean = [score_column] if score_column else []
    header = ["epoch", "train loss", *tasks, *mean, "lr", "s", *(c[1] for c in shown)]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in history:
        cells = [
            str(r["epoch"]),
            _cell(r, "train_loss", "{:.4f}"),
            *(f"{r[t]['score']:.3f}" if t in r else "-" for t in tasks),
            *([_cell(r, "zero_shot_score", "{:.3f}")] if score_column else []),
            _cell(r, "lr", "{:.0e}"),
            _cell(r, "seconds", "{:.0f}"),
            *(_cell(r, key, fmt) for key, _, fmt in shown),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if shown:
        lines += [
            "",
            "Throughput per epoch and per device: this process's samples/s over the epoch's "
            "optimizer steps; a step's time is split into waiting for data and computing; "
            "TFLOP/s = FLOPs per sample (counted with torch.utils.flop_counter.FlopCounterMode, "
            "forward + backward, at the batches' padded caption lengths) x samples / step time; "
            "MFU = TFLOP/s over the device's dense peak for the run's precision "
            "(clapkit.train.throughput.PEAK_FLOPS; shown on the GPUs it lists).",
        ]
    if best is not None:
        lines += ["", f"Best epoch: {best['epoch']} (score {best['score']:.3f}), saved in `best/`."]
    if skipped is not None and skipped.count:
        if hasattr(skipped, "summary"):
            head, *files = skipped.summary()
            lines += ["", f"Skipped bad clips: {head}", *(f"- {line}" for line in files)]
        else:
            lines += ["", f"Skipped {skipped.count} bad clips:"]
            lines += [f"- `{name}`: {reason}" for name, reason in sorted(skipped.reasons.items())]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    write_history_csv(out / "history.csv", history)
    plot_curves(
        out / "curves.png",
        history,
        loss_title=loss_title,
        score_title=score_title,
        score_range=score_range,
    )


def plot_curves(
    path: str | Path,
    history: Sequence[Mapping[str, Any]],
    *,
    loss_title: str = "contrastive loss",
    score_title: str = "zero-shot",
    score_range: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """Training loss and every task's score per epoch, side by side, as a PNG.

    Args:
        path: the image file.
        history: the epoch rows.
        loss_title: the left plot's title.
        score_title: the right plot's title.
        score_range: the score axis limits (None: fit to the values).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    tasks = task_names(history)
    epochs = [r["epoch"] for r in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [r.get("train_loss", math.nan) for r in history], marker="o")
    left.set(xlabel="epoch", ylabel="train loss", title=loss_title)
    for task in tasks:
        scores = [r[task]["score"] if task in r else math.nan for r in history]
        right.plot(epochs, scores, marker="o", label=task)
    right.set(xlabel="epoch", ylabel="score", title=score_title)
    if score_range is not None:
        right.set_ylim(*score_range)
    if tasks:
        right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_model_card(
    folder: str | Path,
    *,
    recipe: str,
    preset: str,
    model: str,
    data: Sequence[str],
    metrics: Mapping[str, Any],
    command: str | None = None,
) -> Path:
    """``README.md`` describing a saved model: the run that made it, nothing else.

    Write it before ``save_pretrained``: huggingface_hub's mixin writes its own card ("This
    model has been pushed to the Hub ...", even when nothing was pushed) only when the folder
    has no ``README.md``.

    Args:
        folder: the model folder.
        recipe: the recipe file, e.g. ``"recipes/pretrain_clap.py"``.
        preset: the preset it ran.
        model: one line naming the encoders and sizes.
        data: the training data and evaluation tasks, one line each.
        metrics: the kept epoch's row (``epoch``, ``score``, per-task mappings).
        command: the launch command, if known.

    Returns:
        The card's path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "---",
        "library_name: clapkit",
        "tags: [clap, audio, contrastive-learning]",
        "---",
        "",
        f"# CLAP model trained by `{recipe}` (preset `{preset}`)",
        "",
        f"Model: {model}.",
        "",
        "## Data",
        "",
        *(f"- {line}" for line in data),
        "",
        "## Metrics of the kept epoch",
        "",
    ]
    if "epoch" in metrics:
        lines.append(f"Epoch {metrics['epoch']}, step {metrics.get('step', '?')}.")
        lines.append("")
    lines += ["| metric | value |", "|---|---|"]
    for name, value in flatten(metrics).items():
        if name not in ("epoch", "step", "seconds"):
            lines.append(f"| {name} | {value:.4g} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from clapkit.core import ClapModel",
        "model = ClapModel.from_pretrained('PATH/TO/THIS/FOLDER')",
        "```",
    ]
    if command:
        lines += ["", "Trained with:", "", "```", command, "```"]
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def push_with_card(
    folder: str | Path,
    repo_id: str,
    *,
    fallback: str,
    pipeline_tag: str = "zero-shot-audio-classification",
    metrics: str | Path | None = None,
    private: bool = False,
    api: Any = None,
) -> str:
    """Upload a saved model folder with a hub model card, in one commit (``--push-to-hub``).

    The card's body is the folder's own ``README.md`` (``fallback`` without one); its metadata
    is clapkit.core's ``model_card`` (licence, pipeline tag, and an evaluation's ``metrics``
    as ``model-index``). The folder is left as it is.

    Args:
        folder: the ``save_pretrained`` folder.
        repo_id: the hub repository (``org/name``).
        fallback: the card's body when the folder has no ``README.md``.
        pipeline_tag: the hub task.
        metrics: an evaluation's ``metrics.json``, or None.
        private: create the repository private.
        api: the ``huggingface_hub.HfApi`` to use (default: a new one).

    Returns:
        The commit's URL.
    """
    from clapkit.core import model_card, push_folder_to_hub

    own = Path(folder) / "README.md"
    card = model_card(
        model_name=repo_id.split("/")[-1],
        description=own.read_text() if own.is_file() else fallback,
        pipeline_tag=pipeline_tag,
        metrics=metrics,
    )
    url: str = push_folder_to_hub(folder, repo_id, card=card, private=private, api=api)
    return url
