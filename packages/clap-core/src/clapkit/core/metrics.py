"""Evaluation metrics of the paper: accuracy, macro mAP, F1 and the 5-caption retrieval metrics.

Classification metrics wrap ``torchmetrics``; the retrieval metrics are computed here because
they need several relevant items per query (the AudioCaps/Clotho 5-caption protocol).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multilabel_average_precision,
    multilabel_f1_score,
)

__all__ = ["accuracy", "f1_score", "mean_average_precision", "retrieval_metrics"]


def _check_scores(scores: Tensor, name: str = "scores") -> None:
    if scores.ndim != 2:
        raise ValueError(f"{name} must be [n, c], got shape {tuple(scores.shape)}")
    nan = torch.isnan(scores)
    if bool(nan.any()):  # NaN sorts as largest: the metric would be a number, and wrong
        row, column = (int(i) for i in nan.nonzero()[0])
        raise ValueError(
            f"{name} hold {int(nan.sum())} NaN value(s), the first at [{row}, {column}]: "
            "NaN scores cannot be ranked (a NaN embedding or a diverged model?)"
        )


def accuracy(scores: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy of a multiclass (or binary, as 2 classes) zero-shot task.

    Args:
        scores: class scores (logits or probabilities; only their order matters). Shape ``[n, c]``.
        targets: true class index of each item. Shape ``[n]``.

    Returns:
        The fraction of items whose highest-scoring class is the true one.

    Raises:
        ValueError: on mismatched shapes or NaN scores (the first one's position named).
    """
    _check_scores(scores)
    if targets.shape != scores.shape[:1]:
        raise ValueError(f"targets must be [{scores.shape[0]}], got {tuple(targets.shape)}")
    value = multiclass_accuracy(
        scores.float(), targets.long(), num_classes=scores.shape[1], average="micro"
    )
    return float(value)


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Macro mean average precision of a multilabel task (FSD50K, AudioSet, ESC50-Actions).

    AP is computed per class from the ranking of all items by that class's score, then averaged
    over the classes that have at least one positive item (a class without positives has no
    defined AP; torchmetrics would count it as 0).

    Args:
        scores: per-class scores (sigmoid probabilities or logits). Shape ``[n, c]``.
        targets: multi-hot ground truth. Shape ``[n, c]``.

    Returns:
        The macro mAP.

    Raises:
        ValueError: on mismatched shapes, NaN scores or when no class has a positive item.
    """
    _check_scores(scores)
    if targets.shape != scores.shape:
        raise ValueError(f"targets must be {tuple(scores.shape)}, got {tuple(targets.shape)}")
    has_positive = targets.bool().any(dim=0)
    if not has_positive.any():
        raise ValueError("no class has a positive item: mAP is undefined")
    # torchmetrics' multilabel AP refuses one label; AP is per class, so a single class is
    # scored as the first of two identical columns
    single = scores.shape[1] == 1
    if single:
        scores, targets = scores.repeat(1, 2), targets.repeat(1, 2)
    with warnings.catch_warnings():  # classes without positives are left out below
        warnings.filterwarnings("ignore", message="No positive samples")
        per_class = multilabel_average_precision(
            scores.float(), targets.long(), num_labels=scores.shape[1], average=None
        )
    if single:
        per_class = per_class[:1]
    return float(per_class[has_positive].mean())


def f1_score(
    scores: Tensor,
    targets: Tensor,
    *,
    top_k: int | Literal["labels"] | None = 1,
    threshold: float | None = None,
    average: str = "micro",
) -> float:
    """F1 of a (weakly labelled) multilabel tagging task such as DCASE 2017 task 4.

    Zero-shot scores are not calibrated, so a clip's predicted labels are by default its
    ``top_k`` highest-scoring classes (top-1: most DCASE 2017 task 4 clips carry one label);
    ``top_k="labels"`` predicts as many classes as the clip has labels (at least one), so a
    clip with several labels can be recalled whole, with no threshold to tune. Pass
    ``threshold`` (and ``top_k=None``) to predict every class whose score (e.g. sigmoid
    probability) is at least the threshold. ``average="micro"`` pools true/false positives over
    all clips and classes, the instance-based F-score of the DCASE 2017 task 4 tagging subtask;
    ``"macro"`` averages per-class F1.

    Args:
        scores: per-class scores. Shape ``[n, c]``.
        targets: multi-hot ground truth. Shape ``[n, c]``.
        top_k: predict this many classes per clip, or ``"labels"``: each clip's label count;
            ``None`` to use ``threshold``.
        threshold: predict classes with ``score >= threshold``; only with ``top_k=None``.
        average: ``"micro"`` or ``"macro"``.

    Returns:
        The F1 score.

    Raises:
        ValueError: on mismatched shapes, NaN scores or if not exactly one of
            ``top_k``/``threshold`` is set.
    """
    _check_scores(scores)
    if targets.shape != scores.shape:
        raise ValueError(f"targets must be {tuple(scores.shape)}, got {tuple(targets.shape)}")
    if (top_k is None) == (threshold is None):
        raise ValueError("give exactly one of top_k and threshold")
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    if top_k == "labels":
        counts = targets.gt(0).sum(dim=1).clamp(min=1)
        ranks = scores.argsort(dim=1, descending=True, stable=True).argsort(dim=1, stable=True)
        predicted = (ranks < counts[:, None]).long()
    elif top_k is not None:
        if not isinstance(top_k, int) or not 1 <= top_k <= scores.shape[1]:
            raise ValueError(f"top_k must be in [1, {scores.shape[1]}], got {top_k}")
        predicted = torch.zeros_like(targets, dtype=torch.long)
        predicted.scatter_(1, scores.topk(top_k, dim=1).indices, 1)
    else:
        predicted = (scores >= float(threshold or 0.0)).long()
    value = multilabel_f1_score(
        predicted,
        targets.long(),
        num_labels=scores.shape[1],
        threshold=0.5,
        average="micro" if average == "micro" else "macro",
    )
    return float(value)


def _ranked_relevance(similarity: Tensor, relevant: Tensor) -> Tensor:
    """Relevance of each query's items in ranked order (stable: ties keep the bank's order)."""
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices
    return torch.gather(relevant, 1, order)


def _query_metrics(similarity: Tensor, relevant: Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    ranked = _ranked_relevance(similarity, relevant).float()
    if (ranked.sum(dim=1) == 0).any():
        raise ValueError("every query needs at least one relevant item")
    first_rank = ranked.argmax(dim=1) + 1  # 1-based rank of the first relevant item
    out = {f"R@{k}": float((first_rank <= k).float().mean()) for k in ks}
    cutoff = min(10, ranked.shape[1])
    top = ranked[:, :cutoff]
    precision_at = top.cumsum(dim=1) / torch.arange(1, cutoff + 1, device=top.device)
    n_relevant = ranked.sum(dim=1).clamp(max=10)
    out["mAP@10"] = float(((precision_at * top).sum(dim=1) / n_relevant).mean())
    out["MRR@10"] = float(torch.where(first_rank <= 10, 1.0 / first_rank, 0.0).mean())
    return out


def retrieval_metrics(
    similarity: Tensor, caption_to_audio: Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Audio-text retrieval metrics with several captions per clip (AudioCaps/Clotho protocol).

    Text -> audio: every caption is a query with exactly one relevant clip. Audio -> text: every
    clip is a query and all of its captions are relevant. For each query and direction:

    - ``R@k``: 1 if a relevant item is among the top ``k``, else 0 (any of the 5 captions counts).
    - ``mAP@10``: average precision over the top 10,
      ``sum_{i<=10} P@i * rel_i / min(n_relevant, 10)``. With one relevant item this is
      ``1/rank`` if ``rank <= 10`` else 0, the DCASE 2022 task 6B definition; with 5 captions it
      is the usual AP@10, which is why the paper's audio->text mAP@10 can be below its R@1.
    - ``MRR@10``: ``1/rank`` of the first relevant item if within the top 10, else 0 (what
      LAION-CLAP reports as audio->text mAP@10).

    All are averaged over queries. Ties in similarity are broken by the bank's order.

    Args:
        similarity: scores between every clip and every caption. Shape ``[n_audio, n_text]``.
        caption_to_audio: index of the clip each caption describes. Shape ``[n_text]``.
        ks: the cut-offs of ``R@k``.

    Returns:
        ``{"audio_to_text/R@1": ..., "audio_to_text/mAP@10": ..., "text_to_audio/R@1": ...}``
        with ``R@k`` for each ``k``, ``mAP@10`` and ``MRR@10`` in both directions.

    Raises:
        ValueError: on mismatched shapes, NaN similarities, a caption index out of range or a
            clip without captions.
    """
    _check_scores(similarity, "similarity")
    n_audio, n_text = similarity.shape
    if caption_to_audio.shape != (n_text,):
        raise ValueError(
            f"caption_to_audio must be [{n_text}], got {tuple(caption_to_audio.shape)}"
        )
    caption_to_audio = caption_to_audio.long().to(similarity.device)
    if caption_to_audio.min() < 0 or caption_to_audio.max() >= n_audio:
        raise ValueError(f"caption_to_audio holds indices outside [0, {n_audio})")
    relevant = caption_to_audio[None, :] == torch.arange(n_audio, device=similarity.device)[:, None]
    if not relevant.any(dim=1).all():
        missing = (~relevant.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"clips without any caption: {missing[:10]}")
    similarity = similarity.float()
    results: dict[str, float] = {}
    for direction, sim, rel in (
        ("audio_to_text", similarity, relevant),
        ("text_to_audio", similarity.T, relevant.T),
    ):
        for name, value in _query_metrics(sim, rel.long(), ks).items():
            results[f"{direction}/{name}"] = value
    return results
