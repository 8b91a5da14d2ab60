"""Zero-shot classification of a labelled manifest, batched and distributed-ready.

Used by the pretraining recipe (the per-epoch zero-shot score) and ``evaluate_zeroshot.py``.
The audio passes through a ``DataLoader`` (workers, ranks); the caller passes a ``gather``
(``accelerator.gather_for_metrics``) to collect every rank's rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clapkit.audio import FrontendConfig
from clapkit.data.dataset import ManifestDataset, OnError


@dataclass
class ZeroShotTask:
    """A labelled manifest seen as a zero-shot classification task.

    Attributes:
        name: the task's name (the manifest's file stem by default).
        dataset: the evaluation dataset (deterministic crops).
        class_names: sorted labels over the manifest; prompts are made from them.
        multilabel: whether some clip has several labels (then mAP, else accuracy).
    """

    name: str
    dataset: ManifestDataset
    class_names: list[str]
    multilabel: bool

    @classmethod
    def from_manifest(
        cls,
        manifest: str | os.PathLike[str],
        frontend: FrontendConfig,
        *,
        name: str | None = None,
        on_error: OnError = "raise",
        cache_audio: bool = False,
    ) -> ZeroShotTask:
        """Read a labelled manifest.

        Raises:
            ValueError: a clip has no label (named), or the manifest has fewer than 2 classes.
        """
        dataset = ManifestDataset(
            manifest, frontend, train=False, on_error=on_error, cache_audio=cache_audio
        )
        unlabelled = [r.key for r in dataset.records if not r.labels]
        if unlabelled:
            raise ValueError(
                f"{manifest}: {len(unlabelled)} clips have no label, e.g. {unlabelled[:5]}"
            )
        class_names = dataset.labels()
        if len(class_names) < 2:
            raise ValueError(f"{manifest}: zero-shot needs >= 2 classes, found {class_names}")
        multilabel = any(len(r.labels) > 1 for r in dataset.records)
        return cls(name or Path(manifest).stem, dataset, class_names, multilabel)

    def targets(self, labels: Sequence[Sequence[str]]) -> Tensor:
        """Multi-hot targets of a batch's labels.

        Shapes:
            returns ``[b, c]`` float, ``c = len(class_names)``.
        """
        index = {name: i for i, name in enumerate(self.class_names)}
        out = torch.zeros(len(labels), len(self.class_names))
        for row, clip_labels in enumerate(labels):
            for label in clip_labels:
                out[row, index[label]] = 1.0
        return out


def prompts(class_names: Sequence[str], template: str) -> list[str]:
    """``template.format(name)`` for every class (``"this is a sound of {}"``)."""
    if "{}" not in template and "{label}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' or '{{label}}' slot")
    return [template.replace("{label}", "{}").format(name) for name in class_names]


@torch.no_grad()
def class_embeddings(
    embed_text: Callable[[list[str]], Tensor], class_names: Sequence[str], templates: Sequence[str]
) -> Tensor:
    """Prompt embeddings per class, averaged over templates and renormalised (open_clip style).

    Args:
        embed_text: texts -> L2-normalised embeddings ``[n, d]`` (``model.embed_text``).
        class_names: the classes.
        templates: one or more prompt templates with a ``{}`` slot.

    Returns:
        ``[c, d]`` unit-norm class embeddings.
    """
    stacked = torch.stack([embed_text(prompts(class_names, t)) for t in templates])
    return F.normalize(stacked.float().mean(dim=0), dim=-1)


@torch.no_grad()
def zero_shot_scores(
    embed_audio: Callable[[Tensor], Tensor],
    batches: Iterable[dict[str, Any]],
    task: ZeroShotTask,
    class_embeds: Tensor,
    *,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Cosine similarities of every clip to every class, with the targets.

    Args:
        embed_audio: waveforms ``[b, t]`` -> L2-normalised embeddings ``[b, d]``.
        batches: collated batches of ``task.dataset`` (keys ``waveform``, ``labels``).
        task: the task (gives the targets).
        class_embeds: ``[c, d]`` from `class_embeddings`.
        gather: collects a tensor from every rank (``accelerator.gather_for_metrics``).

    Returns:
        ``scores [n, c]`` (cosine similarity; softmax/sigmoid do not change the metrics) and
        ``targets [n, c]`` multi-hot, on the CPU.
    """
    scores, targets = [], []
    for batch in batches:
        if batch["waveform"].shape[0] == 0:
            continue
        audio = embed_audio(batch["waveform"]).float()
        batch_scores = audio @ class_embeds.to(audio.device).T
        batch_targets = task.targets(batch["labels"]).to(audio.device)
        if gather is not None:
            batch_scores, batch_targets = gather(batch_scores), gather(batch_targets)
        scores.append(batch_scores.cpu())
        targets.append(batch_targets.cpu())
    return torch.cat(scores), torch.cat(targets)


def per_class_accuracy(scores: Tensor, targets: Tensor) -> Tensor:
    """Recall of each class of a multiclass task (``nan`` for classes without clips).

    Shapes:
        scores, targets: ``[n, c]``; returns ``[c]``.
    """
    predicted = scores.argmax(dim=-1)
    truth = targets.argmax(dim=-1)
    hits = torch.zeros(scores.shape[1]).index_add_(0, truth, (predicted == truth).float())
    counts = torch.bincount(truth, minlength=scores.shape[1]).float()
    return hits / counts


def confusion_matrix(scores: Tensor, targets: Tensor) -> Tensor:
    """Counts ``[c, c]``: row = true class, column = predicted class (multiclass)."""
    c = scores.shape[1]
    flat = targets.argmax(dim=-1) * c + scores.argmax(dim=-1)
    return torch.bincount(flat, minlength=c * c).reshape(c, c)
