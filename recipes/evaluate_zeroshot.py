"""Zero-shot classification of a labelled manifest with a trained CLAP checkpoint.

Launch:
    accelerate launch recipes/evaluate_zeroshot.py --checkpoint runs/demo/best \
        --manifest runs/demo/data/heldout_theo.jsonl --template "a man says the digit {}" \
        --output-dir runs/demo/eval

Reproduces: one zero-shot column of the paper's Tables 1 and 2 (section 2.3): class prompts from
the template(s) (several templates are averaged), cosine similarity, softmax ranking for
multiclass (accuracy) and sigmoid for multilabel (macro mAP). Clips longer than the model's clip
are centre-cropped to it, shorter ones filled as the model's front end says.

Writes ``metrics.json`` (accuracy and per-class accuracy, or mAP when some clip has several
labels) and ``confusion_matrix.png`` (multiclass) into ``--output-dir``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
from accelerate import Accelerator
from torch.utils.data import DataLoader

from clapkit.core import ClapModel
from clapkit.data import ClapCollator
from clapkit.data.zero_shot import (
    ZeroShotTask,
    class_embeddings,
    confusion_matrix,
    per_class_accuracy,
    zero_shot_scores,
)
from clapkit.core.metrics import accuracy, mean_average_precision


@dataclass(frozen=True)
class Config:
    """Evaluation settings."""

    checkpoint: str
    """A ClapModel.save_pretrained folder (e.g. the pretraining run's best/)."""
    manifest: str
    """Labelled JSON Lines manifest."""
    output_dir: str
    template: tuple[str, ...] = ("this is a sound of {}",)
    """Prompt template(s); {} is the label; several are averaged."""
    batch_size: int = 64
    num_workers: int = 2
    on_error: Literal["raise", "skip"] = "raise"
    """Bad files are an error in evaluation unless told otherwise."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"


def plot_confusion(path: Path, counts: torch.Tensor, names: list[str]) -> None:
    """Row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.45 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xlabel="predicted",
        ylabel="true",
        title="zero-shot confusion (row-normalised)",
    )
    axes.set_xticklabels(names, rotation=90)
    axes.set_yticklabels(names)
    if len(names) <= 20:
        for (row, col), value in zip(
            counts.nonzero().tolist(), counts[counts > 0].tolist(), strict=True
        ):
            axes.text(col, row, str(value), ha="center", va="center", fontsize=7)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(cfg: Config) -> dict[str, object]:
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    model = ClapModel.from_pretrained(cfg.checkpoint).eval()
    task = ZeroShotTask.from_manifest(cfg.manifest, model.frontend, on_error=cfg.on_error)
    loader = DataLoader(
        task.dataset,
        batch_size=cfg.batch_size,
        collate_fn=ClapCollator(),
        num_workers=cfg.num_workers,
    )
    model, loader = accelerator.prepare(model, loader)
    clap = accelerator.unwrap_model(model)
    with torch.no_grad(), accelerator.autocast():
        classes = class_embeddings(
            lambda t: clap.encode_text(t, normalize=True), task.class_names, list(cfg.template)
        )
        scores, targets = zero_shot_scores(
            lambda w: clap.encode_audio(w, normalize=True),
            loader,
            task,
            classes,
            gather=accelerator.gather_for_metrics,
        )
    metrics: dict[str, object] = {
        "checkpoint": cfg.checkpoint,
        "manifest": cfg.manifest,
        "templates": list(cfg.template),
        "clips": scores.shape[0],
        "classes": task.class_names,
        "multilabel": task.multilabel,
    }
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    if task.multilabel:
        metrics["mAP"] = mean_average_precision(scores, targets)
    else:
        truth = targets.argmax(dim=-1)
        metrics["accuracy"] = accuracy(scores, truth)
        metrics["per_class_accuracy"] = dict(
            zip(task.class_names, per_class_accuracy(scores, targets).tolist(), strict=True)
        )
        counts = confusion_matrix(scores, targets)
        metrics["confusion_matrix"] = counts.tolist()
        if accelerator.is_main_process:
            plot_confusion(out / "confusion_matrix.png", counts, task.class_names)
    if accelerator.is_main_process:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        headline = (
            f"mAP {metrics['mAP']:.4f}"
            if task.multilabel
            else f"accuracy {metrics['accuracy']:.4f}"
        )
        print(
            f"{task.name}: {headline} over {scores.shape[0]} clips, "
            f"{len(task.class_names)} classes -> {out / 'metrics.json'}"
        )
    return metrics


if __name__ == "__main__":
    main(tyro.cli(Config, args=sys.argv[1:], description=__doc__))
