"""The machinery of an evaluation suite: which tasks to run, cache keys, the paper's column.

``recipes/evaluate.py`` is the life cycle (load, embed, score, write); this module holds what
it decides with::

    runs, not_found = resolve_tasks(suite="table1", data_root="eval-data")
    row = paper_row(model.config.audio, model.config.text)     # "table1/HTSAT-22+GPT2"
    key = cache_key(weights_digest("runs/x/best"), clip_list(paths))
    report = report_markdown(rows, title="best", paper_column=row, ...)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clapkit.data.tasks import TABLE1_TASKS, TABLE2_TASKS, Task, get_task, manifest_task

__all__ = [
    "CAPTION_NAMES",
    "DIRECTIONS",
    "SUITES",
    "TABLE2_ROW",
    "ReportRow",
    "TaskRun",
    "cache_key",
    "clip_list",
    "headline_value",
    "paper_row",
    "report_markdown",
    "report_rows",
    "resolve_tasks",
    "weights_digest",
]

SUITES = {"table1": TABLE1_TASKS, "table2": TABLE2_TASKS}
TABLE2_ROW = "table2/CLAP 2023"
# clapkit.core.metrics' retrieval names -> the paper's
DIRECTIONS = {"audio_to_text": "a2t", "text_to_audio": "t2a"}
# clapkit.caption.evaluate_captions' names -> the paper's
CAPTION_NAMES = {
    "cider_d": "CIDEr-D",
    "spice": "SPICE",
    "spider": "SPIDEr",
    "bleu_4": "BLEU-4",
    "rouge_l": "ROUGE-L",
}
AUDIO_NAMES = {"cnn14": "CNN14", "htsat": "HTSAT"}
TEXT_NAMES = {"bert": "BERT", "roberta": "RoBERTa", "clip": "CLIP", "gpt2-eot": "GPT2"}
ZERO_SHOT = ("multiclass", "multilabel")

# (task, metric, clapkit, paper, chance)
ReportRow = tuple[str, str, float, float | None, float | None]


@dataclass(frozen=True)
class TaskRun:
    """One task to evaluate: its name in the outputs, the task and the dataset folder."""

    name: str
    task: Task
    root: Path


def resolve_tasks(
    *,
    suite: str | None = None,
    data_root: str | None = None,
    task_specs: Sequence[str] = (),
    manifests: Sequence[str] = (),
    templates: Sequence[str] = (),
    captioner: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
) -> tuple[list[TaskRun], dict[str, str]]:
    """The tasks to run, and the suite's tasks whose dataset was not found (with why).

    Args:
        suite: ``"table1"`` or ``"table2"``: every task of the table found under ``data_root``
            (``<data_root>/<task>/``; a captioning task also looks in its retrieval folder).
        data_root: the folder holding the suite's dataset folders.
        task_specs: ``NAME=PATH`` of registered tasks.
        manifests: labelled JSON Lines manifests, each a zero-shot task named after its file.
        templates: prompt templates replacing every zero-shot task's (none: the task's own).
        captioner: a captioner is given (else captioning tasks are listed as not run).
        on_error: ``"skip"``: manifest lines without labels are left out, not an error.

    Returns:
        The runs in order (suite, then ``task_specs``, then manifests) and ``{task: why}``
        for the suite's tasks that will not run.

    Raises:
        SystemExit: nothing to run, a bad ``NAME=PATH``, an unknown task, ``suite`` without
            ``data_root``, or a manifest that is missing or malformed (file and line named).
    """
    runs: list[TaskRun] = []
    not_found: dict[str, str] = {}
    if suite is not None:
        if data_root is None:
            raise SystemExit("--suite needs --data-root (the folder holding <task>/ folders)")
        root = Path(data_root)
        for name in SUITES[suite]:
            task = get_task(name)
            # a captioning task reads the same folder as the retrieval task of its dataset
            found = [root / f for f in (name, name.removesuffix("-caption")) if (root / f).is_dir()]
            if not found:
                not_found[name] = f"no folder {root / name} ({task.layout})"
            elif task.kind == "captioning" and not captioner:
                not_found[name] = "captioning needs --captioner (a ClapCaptioner folder)"
            else:
                runs.append(TaskRun(name, task, found[0]))
    for spec in task_specs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise SystemExit(f"--task {spec!r}: expected NAME=PATH")
        try:
            runs.append(TaskRun(name, get_task(name), Path(path)))
        except KeyError as error:
            raise SystemExit(str(error)) from None
    for manifest in map(Path, manifests):
        try:
            task = manifest_task(manifest, templates, on_error=on_error)
        except (OSError, ValueError) as error:  # ManifestError is a ValueError; names the file
            raise SystemExit(f"--manifest: {error}") from None
        runs.append(TaskRun(manifest.stem, task, manifest.parent))
    if not runs and not not_found:
        raise SystemExit("nothing to evaluate: give --suite with --data-root, --task or --manifest")
    if templates:
        runs = [
            dataclasses.replace(r, task=dataclasses.replace(r.task, templates=tuple(templates)))
            if r.task.kind in ZERO_SHOT
            else r
            for r in runs
        ]
    return runs, not_found


def weights_digest(folder: str | Path) -> str:
    """SHA-256 of a ``save_pretrained`` folder's ``model.safetensors`` (of its name if none)."""
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        return hashlib.sha256(str(folder).encode()).hexdigest()
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(*parts: Any) -> str:
    """A short hash of JSON-able parts (weights digest, clip list with sizes, texts, settings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def clip_list(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of each clip: a replaced file changes the cache key.

    A file that is gone is listed with size and time -1 (it is reported when decoded).
    """
    listed = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            listed.append((str(path), -1, -1))
            continue
        listed.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return listed


def headline_value(task: Task, metric: str, row: str) -> float | None:
    """The paper's number of ``metric`` in ``row`` (``table1/...`` or ``table2/...``), if any."""
    paper = dict(task.paper)
    if metric == task.metrics[0] and row in paper:
        return paper[row]
    return paper.get(f"{row} {metric}")


def paper_row(
    audio: Mapping[str, Any],
    text: Mapping[str, Any],
    table: Literal["auto", "table1", "table2"] = "auto",
) -> str:
    """The paper's row to print beside a model: ``table1/<AUDIO>+<TEXT>`` or Table 2's.

    Args:
        audio: the model's audio config (``ClapModel.config.audio``).
        text: its text config.
        table: ``auto``: the Table 1 row of the encoder pair where the paper has one.

    Returns:
        The row name used in the tasks' ``paper`` entries.
    """
    if table == "table2":
        return TABLE2_ROW
    name = AUDIO_NAMES.get(audio.get("architecture", ""), "?")
    # HTSAT-22 is HTS-AT's architecture with other weights, on the paper's 44.1 kHz front end
    if name == "HTSAT" and audio.get("frontend", {}).get("sample_rate") == 44100:
        name = "HTSAT-22"
    pair = f"table1/{name}+{TEXT_NAMES.get(text.get('architecture', ''), '?')}"
    known = {row for task in TABLE1_TASKS for row, _ in get_task(task).paper}
    return pair if table == "table1" or pair in known else TABLE2_ROW


def report_rows(
    results: Mapping[str, Mapping[str, Any]],
    tasks: Mapping[str, Task],
    chance: Mapping[str, float | None],
    row: str,
) -> list[ReportRow]:
    """``(task, metric, clapkit, paper, chance)`` for every metric measured.

    Args:
        results: task -> its metrics (numbers; ``n_clips`` and ``skipped`` are not metrics).
        tasks: task name -> the task.
        chance: task name -> the chance level of its headline metric.
        row: the paper row (:func:`paper_row`); Table 2's fills what it lacks.
    """
    rows = []
    for name, metrics in results.items():
        task = tasks[name]
        for metric, value in metrics.items():
            if metric in ("n_clips", "skipped"):
                continue
            paper = headline_value(task, metric, row)
            if paper is None:  # Table 2 holds every task; Table 1 only the zero-shot ones
                paper = headline_value(task, metric, TABLE2_ROW)
            level = chance.get(name) if metric == task.metrics[0] else None
            rows.append((name, metric, value, paper, level))
    return rows


def report_markdown(
    rows: Sequence[ReportRow],
    *,
    title: str,
    paper_column: str,
    command: str,
    not_evaluated: Mapping[str, str],
    skipped: Mapping[str, Mapping[str, str]],
    warnings: Mapping[str, Sequence[str]],
) -> str:
    """The report: the metric table beside the paper, then what was not evaluated or skipped.

    Args:
        rows: from :func:`report_rows`.
        title: what was evaluated (the checkpoint's folder name).
        paper_column: the paper row of the table.
        command: the command line that made it.
        not_evaluated: task -> why it did not run (not found, failed).
        skipped: task -> {clip: reason} of the clips left out of its metrics.
        warnings: task -> its dataset's warnings.
    """

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"# Evaluation of `{title}`",
        "",
        f"Paper column: `{paper_column}` where the task has it, else `{TABLE2_ROW}`.",
        f"Command: `{command}`",
        "",
        "| task | metric | clapkit | paper | chance |",
        "|---|---|---|---|---|",
        *(f"| {t} | {m} | {v:.3f} | {cell(p)} | {cell(c)} |" for t, m, v, p, c in rows),
    ]
    if not_evaluated:
        lines += ["", "## Not evaluated", ""] + [f"- {k}: {v}" for k, v in not_evaluated.items()]
    left_out = {task: clips for task, clips in skipped.items() if clips}
    if left_out:
        total = sum(len(clips) for clips in left_out.values())
        lines += ["", f"## Clips left out of the metrics ({total})", ""]
        lines += [
            f"- {task}: `{clip}`: {why}"
            for task, clips in left_out.items()
            for clip, why in clips.items()
        ]
    notes = [f"- {k}: {w}" for k, ws in warnings.items() for w in ws]
    if notes:
        lines += ["", "## Dataset warnings", "", *notes]
    return "\n".join(lines) + "\n"
