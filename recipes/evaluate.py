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
A broken dataset fails its task only; the command exits 1 after the others finish. With
``--on-error skip`` a clip that will not decode, or a manifest line without labels, is left out
of its task's metrics instead and named in ``metrics.json`` (``"skipped": {clip: reason}``) and
``report.md``; ``n_clips`` counts the clips scored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro
from accelerate import Accelerator  # type: ignore[import-untyped]
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from clapkit.core import ClapModel, ensemble_class_embeddings, format_prompts, zero_shot_scores
from clapkit.core.metrics import accuracy, f1_score, mean_average_precision, retrieval_metrics
from clapkit.train.plots import confusion_counts, plot_bars, plot_confusion
from clapkit.train.shares import map_files, map_shares
from clapkit.train.suite import (
    CAPTION_NAMES,
    DIRECTIONS,
    TaskRun,
    cache_key,
    clip_list,
    paper_row,
    report_markdown,
    report_rows,
    resolve_tasks,
    weights_digest,
)

Append = tyro.conf.UseAppendAction


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
    on_error: Literal["raise", "skip"] = "raise"
    """A clip that will not decode or a manifest line without labels: fatal to its task, or
    left out of the metrics and listed (metrics.json "skipped", report.md)."""
    push_to_hub: str | None = None
    """A hub repository (org/name): the checkpoint goes up with a model card whose model-index
    holds these metrics, in one commit."""
    hub_private: bool = False


class EvaluateRecipe:
    """The evaluation life cycle: ``setup`` (models, tasks), ``evaluate`` (every task), ``cleanup``.

    Args:
        cfg: the settings.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.results: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, dict[str, str]] = {}
        self.failed: dict[str, str] = {}
        self.warnings: dict[str, list[str]] = {}
        self.confusions: dict[str, tuple[Tensor, list[str]]] = {}
        self.chance: dict[str, float | None] = {}

    def setup(self) -> None:
        """Start the accelerator, load the model (and captioner), resolve the tasks."""
        cfg = self.cfg
        self.accelerator = Accelerator()
        self.runs, self.not_found = resolve_tasks(
            suite=cfg.suite,
            data_root=cfg.data_root,
            task_specs=cfg.task,
            manifests=cfg.manifest,
            templates=cfg.template,
            captioner=cfg.captioner is not None,
            on_error=cfg.on_error,
        )
        device = self.accelerator.device
        self.captioner: Any = None
        try:  # a missing or broken folder: its message names it; no traceback
            self.model = ClapModel.from_pretrained(cfg.checkpoint).to(device).eval()
            if cfg.captioner is not None:
                from clapkit.caption import ClapCaptioner

                self.captioner = ClapCaptioner.from_pretrained(cfg.captioner).to(device).eval()
                self.captioner_digest = weights_digest(cfg.captioner)
        except (OSError, ValueError) as error:  # CheckpointError is a ValueError
            raise SystemExit(f"error: {error}") from None
        self.model_digest = weights_digest(cfg.checkpoint)
        model_config = self.model.config
        self.paper_row = paper_row(model_config.audio, model_config.text, cfg.paper_table)
        (self.out / "cache").mkdir(parents=True, exist_ok=True)

    def per_file(
        self, run: TaskRun, paths: list[Path], compute: Callable[[list[Path]], Any], unit: str
    ) -> tuple[list[Any], list[int], dict[str, str]]:
        """``compute`` over every process's share of the files, bad files skipped if told.

        Returns:
            Every share's chunk results in order, the kept files' indices and the skipped
            files with why (``--on-error skip``; else the first bad file fails the task).
        """
        bar = tqdm(total=len(paths), desc=f"{run.name} {unit}", unit="clip",
                   disable=not self.accelerator.is_local_main_process)  # fmt: skip
        with bar:
            found = map_files(self.accelerator, paths, compute, on_error=self.cfg.on_error,
                              chunk=self.cfg.batch_size * 4, done=bar.update)  # fmt: skip
        return found.parts, found.kept, found.skipped

    def embed_audio(self, run: TaskRun, paths: list[Path]) -> tuple[Tensor, list[int]]:
        """The task's clips embedded (normalised), cached; and the indices of those kept.

        With ``--on-error skip`` a clip that will not decode is left out and listed in
        ``self.skipped[run.name]``; the cache keeps what was left out.
        """
        cfg = self.cfg
        key = cache_key(self.model_digest, cfg.long_audio, cfg.on_error, clip_list(paths))
        path = self.out / "cache" / f"{run.name}-audio-{key}.safetensors"
        if path.is_file():
            self.accelerator.print(f"{run.name}: audio embeddings from cache {path.name}")
            with safe_open(path, "pt") as cached:
                embeds, kept = cached.get_tensor("embeddings"), cached.get_tensor("kept")
                skipped = json.loads((cached.metadata() or {}).get("skipped", "{}"))
        else:

            def embed(files: list[Path]) -> Tensor:
                return self.model.embed_audio(
                    files,
                    batch_size=cfg.batch_size,
                    long_audio=cfg.long_audio,
                    num_workers=cfg.num_workers,
                    progress=False,
                ).cpu()

            parts, kept_list, skipped = self.per_file(run, paths, embed, "audio")
            if not parts:
                raise ValueError(f"no clip could be decoded (e.g. {list(skipped.items())[:3]})")
            embeds, kept = torch.cat(parts), torch.tensor(kept_list, dtype=torch.long)
            if self.accelerator.is_main_process:
                tensors = {"embeddings": embeds.contiguous(), "kept": kept}
                save_file(tensors, path, metadata={"skipped": json.dumps(skipped)})
        self.skipped.setdefault(run.name, {}).update(skipped)
        return embeds, kept.tolist()

    def embed_text(self, run: TaskRun, texts: list[str]) -> Tensor:
        """Normalised embeddings of texts (prompts or captions), cached."""
        path = (
            self.out
            / "cache"
            / f"{run.name}-text-{cache_key(self.model_digest, texts)}.safetensors"
        )
        if path.is_file():
            self.accelerator.print(f"{run.name}: text embeddings from cache {path.name}")
            with safe_open(path, "pt") as cached:
                return cached.get_tensor("embeddings")

        def embed(share: list[str]) -> Tensor:
            return self.model.embed_text(share, progress=False).cpu()

        embeds = torch.cat(map_shares(self.accelerator, texts, embed))
        if self.accelerator.is_main_process:
            save_file({"embeddings": embeds.contiguous()}, path)
        return embeds

    def evaluate(self) -> int:
        """Run every task (a failure is recorded, the others go on), write the outputs.

        Returns:
            0 when every task ran, 1 when some failed.
        """
        for run in self.runs:
            try:
                data = run.task.load(run.root)
                self.warnings[run.name] = list(data.warnings)
                self.skipped[run.name] = dict(data.skipped)
                kind = run.task.kind
                if kind in ("multiclass", "multilabel"):
                    metrics, n_clips = self.classify(run, data)
                elif kind == "retrieval":
                    metrics, n_clips = self.retrieve(run, data)
                else:
                    metrics, n_clips = self.caption(run, data)
            # a broken dataset fails its task only; the suite goes on
            except Exception as error:
                self.failed[run.name] = f"{type(error).__name__}: {error}"
                self.accelerator.print(f"{run.name}: FAILED: {self.failed[run.name]}")
                continue
            self.results[run.name] = {**metrics, "n_clips": n_clips}
            if self.skipped[run.name]:
                self.results[run.name]["skipped"] = self.skipped[run.name]
            self.accelerator.print(f"{run.name}: {json.dumps(self.results[run.name])}")
            self.write_outputs()
        self.write_outputs()
        for name, why in {**self.not_found, **self.failed}.items():
            self.accelerator.print(f"{name}: not evaluated: {why}")
        return 1 if self.failed else 0

    def classify(self, run: TaskRun, data: Any) -> tuple[dict[str, float], int]:
        """Zero-shot classification: prompt-ensembled classes, softmax or sigmoid, the metric."""
        names = list(data.class_names)
        templates = run.task.templates
        prompts = format_prompts([run.task.label_text(name) for name in names], templates)
        audio, kept = self.embed_audio(run, [r.audio for r in data.records])
        texts = self.embed_text(run, [p for per_template in prompts for p in per_template])
        # core's one prompt-ensembling rule, on the (cached) prompt embeddings
        classes = ensemble_class_embeddings(texts.reshape(len(templates), len(names), -1))
        multilabel = run.task.kind == "multilabel"
        scale = self.model.logit_scale_exp.detach().cpu()
        scores = zero_shot_scores(audio, classes, scale, multilabel)
        targets = data.targets()[kept]
        chance = run.task.chance_level
        self.chance[run.name] = chance if chance or multilabel else 1.0 / len(names)
        if not multilabel:
            self.confusions[run.name] = (confusion_counts(scores, targets, len(names)), names)
            return {"accuracy": accuracy(scores, targets)}, len(kept)
        if run.task.metrics[0] == "F1":
            return {"F1": f1_score(scores, targets, top_k="labels")}, len(kept)
        return {"mAP": mean_average_precision(scores, targets)}, len(kept)

    def retrieve(self, run: TaskRun, data: Any) -> tuple[dict[str, float], int]:
        """Text-audio retrieval with every caption of a clip relevant (5-caption protocol)."""
        audio, kept = self.embed_audio(run, [r.audio for r in data.records])
        records = [data.records[i] for i in kept]
        owner = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
        texts = self.embed_text(run, [c for r in records for c in r.captions])
        found = retrieval_metrics(audio @ texts.T, owner)
        metrics = {
            f"{DIRECTIONS[direction]}/{metric}": value
            for key, value in found.items()
            for direction, metric in [key.split("/")]
            if metric != "MRR@10"
        }
        return metrics, len(kept)

    def caption(self, run: TaskRun, data: Any) -> tuple[dict[str, float], int]:
        """Captions from ``--captioner`` (cached), scored with the COCO caption metrics."""
        from clapkit.caption import evaluate_captions

        cfg = self.cfg
        paths = [r.audio for r in data.records]
        settings = (cfg.beam_size, cfg.max_new_tokens, cfg.long_audio, cfg.on_error)
        key = cache_key(self.captioner_digest, settings, clip_list(paths))
        path = self.out / "cache" / f"{run.name}-captions-{key}.json"
        if path.is_file():
            self.accelerator.print(f"{run.name}: captions from cache {path.name}")
            cached = json.loads(path.read_text())
        else:

            def generate(files: list[Path]) -> list[str]:
                return list(self.captioner.generate(files, beam_size=cfg.beam_size,
                    max_new_tokens=cfg.max_new_tokens, long_audio=cfg.long_audio))  # fmt: skip

            parts, kept, skipped = self.per_file(run, paths, generate, "captions")
            predictions = [c for part in parts for c in part]
            cached = {"predictions": predictions, "kept": kept, "skipped": skipped}
            if self.accelerator.is_main_process:
                path.write_text(json.dumps(cached))
        self.skipped[run.name].update(cached["skipped"])
        references = [list(data.records[i].captions) for i in cached["kept"]]
        scores = evaluate_captions(cached["predictions"], references, java=cfg.java)
        for metric, why in scores.missing.items():
            self.warnings[run.name].append(f"{metric} left out: {why}")
        metrics = {CAPTION_NAMES[k]: v for k, v in scores.corpus.items() if k in CAPTION_NAMES}
        return metrics, len(cached["kept"])

    def write_outputs(self) -> None:
        """``metrics.json``, ``status.json``, ``report.md``, the plots (main process only)."""
        if not self.accelerator.is_main_process:
            return
        (self.out / "metrics.json").write_text(json.dumps(self.results, indent=2))
        status = {"paper_row": self.paper_row, "failed": self.failed, "not_found":
                  self.not_found, "warnings": self.warnings, "skipped": self.skipped}  # fmt: skip
        (self.out / "status.json").write_text(json.dumps(status, indent=2))
        tasks = {run.name: run.task for run in self.runs}
        rows = report_rows(self.results, tasks, self.chance, self.paper_row)
        failed = {k: f"FAILED: {v}" for k, v in self.failed.items()}
        report = report_markdown(
            rows,
            title=Path(self.cfg.checkpoint).name,
            paper_column=self.paper_row,
            command=f"accelerate launch recipes/evaluate.py {' '.join(sys.argv[1:])}",
            not_evaluated={**self.not_found, **failed},
            skipped=self.skipped,
            warnings=self.warnings,
        )
        (self.out / "report.md").write_text(report)
        plot_bars(self.out / "report.png", rows)
        for name, (counts, labels) in self.confusions.items():
            plot_confusion(self.out / "confusion" / f"{name}.png", counts, labels, name)

    def cleanup(self) -> None:
        """Wait for every process and end the distributed group."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def push_evaluated(
    checkpoint: str | Path,
    metrics: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    api: Any = None,
) -> str:
    """Upload an evaluated checkpoint with a hub model card whose ``model-index`` holds the
    evaluation's metrics (one commit; the folder is left as it is).

    Args:
        checkpoint: the ``ClapModel.save_pretrained`` folder evaluated.
        metrics: the evaluation's ``metrics.json``.
        repo_id: the hub repository (``org/name``).
        private: create it private.
        api: the ``huggingface_hub.HfApi`` to use (default: a new one).

    Returns:
        The commit's URL.
    """
    from clapkit.train.reporting import push_with_card

    return push_with_card(
        checkpoint, repo_id, fallback=f"The CLAP model `{Path(checkpoint).name}`.",
        metrics=metrics, private=private, api=api,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, evaluate, clean up (and push); returns the exit status."""
    recipe = EvaluateRecipe(tyro.cli(Config, args=argv, description=__doc__))
    recipe.setup()
    status = recipe.evaluate()
    recipe.cleanup()
    cfg = recipe.cfg
    if cfg.push_to_hub and recipe.accelerator.is_main_process:
        url = push_evaluated(cfg.checkpoint, recipe.out / "metrics.json", cfg.push_to_hub,
                             private=cfg.hub_private)  # fmt: skip
        print(f"{cfg.checkpoint} pushed to {cfg.push_to_hub}: {url}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
