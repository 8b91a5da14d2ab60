"""The paper's evaluation (zero-shot, retrieval, captioning) of a CLAP checkpoint in one command.

Launch:
    accelerate launch recipes/evaluate.py --checkpoint runs/t1-htsat22-gpt2/best \
        --suite table1 --data-root eval-data --output-dir runs/t1-htsat22-gpt2/eval

Reproduces: the zero-shot columns of Table 1 (``--suite table1``, 16 tasks) and the zero-shot,
retrieval and captioning rows of Table 2 (``--suite table2``, with ``--captioner`` for the
captioning rows) of arXiv 2309.05767. Each task's dataset is read in its publisher's layout
from ``ROOT/<task>/`` (``clapkit.data.tasks``); ``--task NAME=PATH`` (repeatable) names
datasets anywhere, ``--manifest PATH`` adds a labelled JSON Lines manifest as a task,
``--template`` replaces every zero-shot task's prompt templates. Any number of processes: the
clips are split across them and gathered, giving the numbers of one process.

Writes into ``--output-dir``: ``metrics.json`` (task -> its metrics as the paper names them,
plus ``n_clips``), ``report.md`` (task | metric | clapkit | paper | chance, then what was not
found or failed), ``report.png`` (clapkit against the paper), ``confusion/<task>.png`` for
multiclass tasks, ``status.json`` (failed and missing tasks, dataset warnings) and ``cache/``:
embeddings keyed on the weights' hash and the clip list, so an interrupted suite resumes.
A broken dataset fails its task only; the command exits 1 after the others finish.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro
from accelerate import Accelerator  # type: ignore[import-untyped]
from accelerate.utils import gather_object  # type: ignore[import-untyped]
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from clapkit.core import ClapModel, ensemble_class_embeddings, format_prompts, zero_shot_scores
from clapkit.core.metrics import accuracy, f1_score, mean_average_precision, retrieval_metrics
from clapkit.data.tasks import TABLE1_TASKS, TABLE2_TASKS, Task, get_task, manifest_task
from clapkit.train.plots import confusion_counts, plot_bars, plot_confusion

Append = tyro.conf.UseAppendAction
SUITES = {"table1": TABLE1_TASKS, "table2": TABLE2_TASKS}
TABLE2_ROW = "table2/CLAP 2023"
# clapkit.core.metrics' retrieval names -> the paper's
DIRECTIONS = {"audio_to_text": "a2t", "text_to_audio": "t2a"}
CAPTION_NAMES = {
    "cider_d": "CIDEr-D",
    "spice": "SPICE",
    "spider": "SPIDEr",
    "bleu_4": "BLEU-4",
    "rouge_l": "ROUGE-L",
}
AUDIO_NAMES = {"cnn14": "CNN14", "htsat": "HTSAT"}
TEXT_NAMES = {"bert": "BERT", "roberta": "RoBERTa", "clip": "CLIP", "gpt2-eot": "GPT2"}


@dataclass(frozen=True)
class Config:
    """Evaluation settings; give ``--suite`` with ``--data-root``, ``--task`` or ``--manifest``."""

    checkpoint: str
    """A ClapModel.save_pretrained folder (e.g. a pretraining run's best/)."""
    output_dir: str
    suite: Literal["table1", "table2"] | None = None
    """Every task of the table whose dataset is found under --data-root/<task>/."""
    data_root: str | None = None
    task: Annotated[tuple[str, ...], Append] = ()
    """NAME=PATH: a registered task (clapkit.data.tasks) read from PATH; repeatable."""
    manifest: Annotated[tuple[str, ...], Append] = ()
    """A labelled JSON Lines manifest, evaluated as a zero-shot task named after its file."""
    template: Annotated[tuple[str, ...], Append] = ()
    """Prompt template(s) ({} = the label) replacing every zero-shot task's; several averaged."""
    captioner: str | None = None
    """A ClapCaptioner.save_pretrained folder, for the captioning tasks."""
    paper_table: Literal["auto", "table1", "table2"] = "auto"
    """Paper column: auto = the Table 1 row of the checkpoint's encoder pair where one exists."""
    batch_size: int = 32
    num_workers: int = 2
    long_audio: Literal["mean", "center"] = "mean"
    """Audio longer than the model's clip: mean of window embeddings, or the centred clip."""
    beam_size: int = 5
    max_new_tokens: int = 67
    java: Literal["auto", "require", "skip"] = "auto"
    """SPICE (hence SPIDEr) needs Java; auto leaves them out, with the reason, when absent."""


@dataclass(frozen=True)
class TaskRun:
    """One task to evaluate: its name in the outputs, the task and the dataset folder."""

    name: str
    task: Task
    root: Path


def resolve_tasks(cfg: Config) -> tuple[list[TaskRun], dict[str, str]]:
    """The tasks to run, and the suite's tasks whose dataset was not found (with why).

    Raises:
        SystemExit: no task given, a bad ``--task``, or ``--suite`` without ``--data-root``.
    """
    runs: list[TaskRun] = []
    not_found: dict[str, str] = {}
    if cfg.suite is not None:
        if cfg.data_root is None:
            raise SystemExit("--suite needs --data-root (the folder holding <task>/ folders)")
        for name in SUITES[cfg.suite]:
            task = get_task(name)
            # a captioning task reads the same folder as the retrieval task of its dataset
            folders = [name, name.removesuffix("-caption")]
            found = [Path(cfg.data_root) / f for f in folders if (Path(cfg.data_root) / f).is_dir()]
            if not found:
                not_found[name] = f"no folder {Path(cfg.data_root) / name} ({task.layout})"
            elif task.kind == "captioning" and cfg.captioner is None:
                not_found[name] = "captioning needs --captioner (a ClapCaptioner folder)"
            else:
                runs.append(TaskRun(name, task, found[0]))
    for spec in cfg.task:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise SystemExit(f"--task {spec!r}: expected NAME=PATH")
        try:
            runs.append(TaskRun(name, get_task(name), Path(path)))
        except KeyError as error:
            raise SystemExit(str(error)) from None
    for manifest in map(Path, cfg.manifest):
        runs.append(TaskRun(manifest.stem, manifest_task(manifest, cfg.template), manifest.parent))
    if not runs and not not_found:
        raise SystemExit("nothing to evaluate: give --suite with --data-root, --task or --manifest")
    if cfg.template:
        runs = [
            dataclasses.replace(r, task=dataclasses.replace(r.task, templates=cfg.template))
            if r.task.kind in ("multiclass", "multilabel")
            else r
            for r in runs
        ]
    return runs, not_found


def weights_digest(folder: str) -> str:
    """SHA-256 of a ``save_pretrained`` folder's ``model.safetensors`` (the folder name if none)."""
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        return hashlib.sha256(folder.encode()).hexdigest()
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(*parts: Any) -> str:
    """A short hash of JSON-able parts (weights digest, clip list with sizes, texts, settings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def clip_list(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of each clip: a replaced file changes the cache key."""
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def headline_value(task: Task, metric: str, row: str) -> float | None:
    """The paper's number of ``metric`` in ``row`` (``table1/...`` or ``table2/...``), if any."""
    paper = dict(task.paper)
    if metric == task.metrics[0] and row in paper:
        return paper[row]
    return paper.get(f"{row} {metric}")


class EvaluateRecipe:
    """The evaluation life cycle: ``setup`` (models, tasks), ``evaluate`` (every task), ``cleanup``.

    Args:
        cfg: the settings.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.results: dict[str, dict[str, float]] = {}
        self.failed: dict[str, str] = {}
        self.warnings: dict[str, list[str]] = {}
        self.confusions: dict[str, tuple[Tensor, list[str]]] = {}
        self.chance: dict[str, float | None] = {}

    def setup(self) -> None:
        """Start the accelerator, load the model (and captioner), resolve the tasks."""
        self.accelerator = Accelerator()
        self.runs, self.not_found = resolve_tasks(self.cfg)
        device = self.accelerator.device
        self.model = ClapModel.from_pretrained(self.cfg.checkpoint).to(device).eval()
        self.model_digest = weights_digest(self.cfg.checkpoint)
        self.captioner: Any = None
        if self.cfg.captioner is not None:
            from clapkit.caption import ClapCaptioner

            self.captioner = ClapCaptioner.from_pretrained(self.cfg.captioner).to(device).eval()
            self.captioner_digest = weights_digest(self.cfg.captioner)
        self.paper_row = self._paper_row()
        (self.out / "cache").mkdir(parents=True, exist_ok=True)

    def _paper_row(self) -> str:
        """``table1/<AUDIO>+<TEXT>`` for the checkpoint's encoders, or Table 2's row."""
        if self.cfg.paper_table == "table2":
            return TABLE2_ROW
        audio, text = self.model.config.audio, self.model.config.text
        name = AUDIO_NAMES.get(audio.get("architecture", ""), "?")
        # HTSAT-22 is HTS-AT's architecture with other weights, on the paper's 44.1 kHz front end
        if name == "HTSAT" and audio.get("frontend", {}).get("sample_rate") == 44100:
            name = "HTSAT-22"
        pair = f"table1/{name}+{TEXT_NAMES.get(text.get('architecture', ''), '?')}"
        known = {row for task in TABLE1_TASKS for row, _ in get_task(task).paper}
        return pair if self.cfg.paper_table == "table1" or pair in known else TABLE2_ROW

    def sharded(self, items: Sequence[Any], compute: Callable[[list[Any]], Any]) -> list[Any]:
        """``compute`` on this process's contiguous share of ``items``; every share, in order.

        An error on any process is raised on every process, so none waits in the gather.
        """
        with self.accelerator.split_between_processes(list(items)) as share:
            try:
                part: tuple[bool, Any] = (True, compute(share) if share else None)
            # caught to be re-raised below on every process, so that none waits in the gather
            except Exception as error:
                part = (False, f"{type(error).__name__}: {error}")
        parts = gather_object([part]) if self.accelerator.num_processes > 1 else [part]
        errors = [payload for ok, payload in parts if not ok]
        if errors:
            raise RuntimeError(errors[0])
        return [payload for ok, payload in parts if payload is not None]

    def cached_embeddings(
        self, what: str, key: str, items: Sequence[Any], embed: Callable[[list[Any]], Tensor]
    ) -> Tensor:
        """Embeddings of ``items`` from ``cache/<what>-<key>.safetensors``, else computed."""
        path = self.out / "cache" / f"{what}-{key}.safetensors"
        if path.is_file():
            self.accelerator.print(f"{what}: embeddings from cache {path.name}")
            return load_file(path)["embeddings"]
        embeds = torch.cat([e.cpu() for e in self.sharded(items, embed)])
        if self.accelerator.is_main_process:
            save_file({"embeddings": embeds.contiguous()}, path)
        return embeds

    def embed_audio(self, run: TaskRun, paths: list[Path]) -> Tensor:
        """The task's clips, embedded (normalised) with a progress bar, cached."""
        chunk = self.cfg.batch_size * 4

        def embed(share: list[Path]) -> Tensor:
            parts = []
            bar = tqdm(total=len(share), desc=f"{run.name} audio", unit="clip",
                       disable=not self.accelerator.is_local_main_process)  # fmt: skip
            with bar:
                for start in range(0, len(share), chunk):
                    parts.append(
                        self.model.embed_audio(
                            share[start : start + chunk],
                            batch_size=self.cfg.batch_size,
                            long_audio=self.cfg.long_audio,
                            num_workers=self.cfg.num_workers,
                            progress=False,
                        ).cpu()
                    )
                    bar.update(len(parts[-1]))
            return torch.cat(parts)

        key = cache_key(self.model_digest, self.cfg.long_audio, clip_list(paths))
        return self.cached_embeddings(f"{run.name}-audio", key, paths, embed)

    def embed_text(self, run: TaskRun, texts: list[str]) -> Tensor:
        """Normalised embeddings of texts (prompts or captions), cached."""
        key = cache_key(self.model_digest, texts)

        def embed(share: list[str]) -> Tensor:
            return self.model.embed_text(share, progress=False).cpu()

        return self.cached_embeddings(f"{run.name}-text", key, texts, embed)

    def evaluate(self) -> int:
        """Run every task (a failure is recorded, the others go on), write the outputs.

        Returns:
            0 when every task ran, 1 when some failed.
        """
        for run in self.runs:
            try:
                data = run.task.load(run.root)
                self.warnings[run.name] = list(data.warnings)
                kind = run.task.kind
                if kind in ("multiclass", "multilabel"):
                    metrics = self.classify(run, data)
                elif kind == "retrieval":
                    metrics = self.retrieve(run, data)
                else:
                    metrics = self.caption(run, data)
            # a broken dataset fails its task only; the suite goes on
            except Exception as error:
                self.failed[run.name] = f"{type(error).__name__}: {error}"
                self.accelerator.print(f"{run.name}: FAILED: {self.failed[run.name]}")
                continue
            self.results[run.name] = {**metrics, "n_clips": len(data)}
            self.accelerator.print(f"{run.name}: {json.dumps(self.results[run.name])}")
            self.write_outputs()
        self.write_outputs()
        for name, why in {**self.not_found, **self.failed}.items():
            self.accelerator.print(f"{name}: not evaluated: {why}")
        return 1 if self.failed else 0

    def classify(self, run: TaskRun, data: Any) -> dict[str, float]:
        """Zero-shot classification: prompt-ensembled classes, softmax or sigmoid, the metric."""
        names = list(data.class_names)
        templates = run.task.templates
        prompts = format_prompts([run.task.label_text(name) for name in names], templates)
        audio = self.embed_audio(run, [r.audio for r in data.records])
        texts = self.embed_text(run, [p for per_template in prompts for p in per_template])
        # core's one prompt-ensembling rule, on the (cached) prompt embeddings
        classes = ensemble_class_embeddings(texts.reshape(len(templates), len(names), -1))
        multilabel = run.task.kind == "multilabel"
        scale = self.model.logit_scale_exp.detach().cpu()
        scores = zero_shot_scores(audio, classes, scale, multilabel)
        targets = data.targets()
        chance = run.task.chance_level
        self.chance[run.name] = chance if chance or multilabel else 1.0 / len(names)
        if not multilabel:
            self.confusions[run.name] = (confusion_counts(scores, targets, len(names)), names)
            return {"accuracy": accuracy(scores, targets)}
        metric = run.task.metrics[0]
        if metric == "F1":
            return {"F1": f1_score(scores, targets)}
        return {"mAP": mean_average_precision(scores, targets)}

    def retrieve(self, run: TaskRun, data: Any) -> dict[str, float]:
        """Text-audio retrieval with every caption of a clip relevant (5-caption protocol)."""
        captions = [c for r in data.records for c in r.captions]
        owner = torch.tensor([i for i, r in enumerate(data.records) for _ in r.captions])
        audio = self.embed_audio(run, [r.audio for r in data.records])
        texts = self.embed_text(run, captions)
        found = retrieval_metrics(audio @ texts.T, owner)
        return {
            f"{DIRECTIONS[direction]}/{metric}": value
            for key, value in found.items()
            for direction, metric in [key.split("/")]
            if metric != "MRR@10"
        }

    def caption(self, run: TaskRun, data: Any) -> dict[str, float]:
        """Captions from ``--captioner`` (cached), scored with the COCO caption metrics."""
        from clapkit.caption import evaluate_captions

        cfg = self.cfg
        paths = [r.audio for r in data.records]
        settings = (cfg.beam_size, cfg.max_new_tokens, cfg.long_audio)
        key = cache_key(self.captioner_digest, settings, clip_list(paths))
        path = self.out / "cache" / f"{run.name}-captions-{key}.json"
        if path.is_file():
            self.accelerator.print(f"{run.name}: captions from cache {path.name}")
            predictions = json.loads(path.read_text())
        else:

            def generate(share: list[Path]) -> list[str]:
                return list(
                    self.captioner.generate(
                        share,
                        beam_size=cfg.beam_size,
                        max_new_tokens=cfg.max_new_tokens,
                        long_audio=cfg.long_audio,
                    )
                )

            predictions = [c for part in self.sharded(paths, generate) for c in part]
            if self.accelerator.is_main_process:
                path.write_text(json.dumps(predictions))
        references = [list(r.captions) for r in data.records]
        scores = evaluate_captions(predictions, references, java=cfg.java)
        for metric, why in scores.missing.items():
            self.warnings[run.name].append(f"{metric} left out: {why}")
        return {CAPTION_NAMES[k]: v for k, v in scores.corpus.items() if k in CAPTION_NAMES}

    def write_outputs(self) -> None:
        """``metrics.json``, ``status.json``, ``report.md``, the plots (main process only)."""
        if not self.accelerator.is_main_process:
            return
        (self.out / "metrics.json").write_text(json.dumps(self.results, indent=2))
        status = {"paper_row": self.paper_row, "failed": self.failed,
                  "not_found": self.not_found, "warnings": self.warnings}  # fmt: skip
        (self.out / "status.json").write_text(json.dumps(status, indent=2))
        rows = self.report_rows()
        (self.out / "report.md").write_text(self.report_markdown(rows))
        plot_bars(self.out / "report.png", rows)
        for name, (counts, labels) in self.confusions.items():
            plot_confusion(self.out / "confusion" / f"{name}.png", counts, labels, name)

    def report_rows(self) -> list[tuple[str, str, float, float | None, float | None]]:
        """``(task, metric, clapkit, paper, chance)`` for every metric measured."""
        tasks = {run.name: run.task for run in self.runs}
        rows = []
        for name, metrics in self.results.items():
            task = tasks[name]
            for metric, value in metrics.items():
                if metric == "n_clips":
                    continue
                paper = headline_value(task, metric, self.paper_row)
                if paper is None:  # Table 2 holds every task; Table 1 only the zero-shot ones
                    paper = headline_value(task, metric, TABLE2_ROW)
                chance = self.chance.get(name) if metric == task.metrics[0] else None
                rows.append((name, metric, value, paper, chance))
        return rows

    def report_markdown(
        self, rows: list[tuple[str, str, float, float | None, float | None]]
    ) -> str:
        """The report: the metric table beside the paper, then what was not evaluated."""

        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        lines = [
            f"# Evaluation of `{Path(self.cfg.checkpoint).name}`",
            "",
            f"Paper column: `{self.paper_row}` where the task has it, else `{TABLE2_ROW}`.",
            f"Command: `accelerate launch recipes/evaluate.py {' '.join(sys.argv[1:])}`",
            "",
            "| task | metric | clapkit | paper | chance |",
            "|---|---|---|---|---|",
            *(f"| {t} | {m} | {v:.3f} | {cell(p)} | {cell(c)} |" for t, m, v, p, c in rows),
        ]
        skipped = {**self.not_found, **{k: f"FAILED: {v}" for k, v in self.failed.items()}}
        if skipped:
            lines += ["", "## Not evaluated", ""] + [f"- {k}: {v}" for k, v in skipped.items()]
        notes = [f"- {k}: {w}" for k, ws in self.warnings.items() for w in ws]
        if notes:
            lines += ["", "## Dataset warnings", "", *notes]
        return "\n".join(lines) + "\n"

    def cleanup(self) -> None:
        """Wait for every process and end the distributed group."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, evaluate, clean up; returns the exit status."""
    recipe = EvaluateRecipe(tyro.cli(Config, args=argv, description=__doc__))
    recipe.setup()
    status = recipe.evaluate()
    recipe.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
