"""Metrics on hand-computed examples, and against torchmetrics' retrieval metrics."""

from __future__ import annotations

import pytest
import torch

from clapkit.core.metrics import accuracy, f1_score, mean_average_precision, retrieval_metrics


def test_accuracy_hand_computed() -> None:
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(scores, torch.tensor([1, 1, 1])) == pytest.approx(2 / 3)


def test_macro_map_skips_classes_without_positives() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.6, 0.4, 0.2]])
    targets = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 0]])
    # class 0: both positives ranked first -> AP 1; class 1: positives at ranks 2 and 3 ->
    # (1/2 + 2/3) / 2; class 2 has no positive and is left out of the mean
    expected = (1.0 + (1 / 2 + 2 / 3) / 2) / 2
    assert mean_average_precision(scores, targets) == pytest.approx(expected)


def test_map_without_any_positive_is_an_error() -> None:
    with pytest.raises(ValueError, match="undefined"):
        mean_average_precision(torch.rand(3, 2), torch.zeros(3, 2))


def test_f1_top1_and_threshold_hand_computed() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.6, 0.4, 0.2]])
    targets = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 1, 0]])
    # top-1: TP 2, FP 1, FN 2 -> 2*2 / (2*2 + 1 + 2)
    assert f1_score(scores, targets) == pytest.approx(4 / 7)
    # threshold 0.35: TP 3, FP 1, FN 1
    assert f1_score(scores, targets, top_k=None, threshold=0.35) == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="exactly one"):
        f1_score(scores, targets, top_k=1, threshold=0.5)


def test_f1_top_k_of_each_clips_label_count() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.6, 0.4, 0.2]])
    targets = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 1, 0]])
    # clip 0 predicts its top 2 {0, 2}, clips 1 and 2 their top 1: TP 3, FP 1, FN 1
    assert f1_score(scores, targets, top_k="labels") == pytest.approx(6 / 8)
    # two-label clips ranked perfectly: top-1 caps recall at 1/2, the label count does not
    perfect = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.7, 0.9]])
    two = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert f1_score(perfect, two, top_k=1) == pytest.approx(4 / 6)
    assert f1_score(perfect, two, top_k="labels") == 1.0
    # a clip without labels still predicts one class (a false positive)
    none = torch.tensor([[0, 0, 0], [0, 1, 1]])
    assert f1_score(perfect, none, top_k="labels") == pytest.approx(4 / 5)


def test_retrieval_hand_computed_five_caption_style() -> None:
    # 2 clips, 2 captions each
    similarity = torch.tensor([[0.1, 0.9, 0.8, 0.2], [0.5, 0.4, 0.3, 0.1]])
    caption_to_audio = torch.tensor([0, 0, 1, 1])
    m = retrieval_metrics(similarity, caption_to_audio)
    # clip 0: its captions at ranks 1 and 4; clip 1: at ranks 3 and 4
    assert m["audio_to_text/R@1"] == pytest.approx(0.5)
    assert m["audio_to_text/R@5"] == pytest.approx(1.0)
    assert m["audio_to_text/mAP@10"] == pytest.approx(((1 + 2 / 4) / 2 + (1 / 3 + 2 / 4) / 2) / 2)
    assert m["audio_to_text/MRR@10"] == pytest.approx((1 + 1 / 3) / 2)
    # captions' clips at ranks 2, 1, 2, 2
    assert m["text_to_audio/R@1"] == pytest.approx(0.25)
    assert m["text_to_audio/R@10"] == pytest.approx(1.0)
    assert m["text_to_audio/mAP@10"] == pytest.approx((0.5 + 1 + 0.5 + 0.5) / 4)
    assert m["text_to_audio/MRR@10"] == m["text_to_audio/mAP@10"]


def test_relevant_item_beyond_rank_10_scores_zero() -> None:
    similarity = torch.arange(12, 0, -1, dtype=torch.float).expand(2, 12)  # caption i ranked i+1
    caption_to_audio = torch.tensor([1] * 11 + [0])  # clip 0 owns caption 11, ranked 12th
    m = retrieval_metrics(similarity, caption_to_audio)
    assert m["audio_to_text/R@10"] == pytest.approx(0.5)  # clip 1 hits at rank 1, clip 0 misses
    assert m["audio_to_text/MRR@10"] == pytest.approx(0.5)


def _ap_at_10_loop(scores: list[float], relevant: list[bool]) -> float:
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[:10]
    hits, total = 0, 0.0
    for position, item in enumerate(ranked, start=1):
        if relevant[item]:
            hits += 1
            total += hits / position
    return total / min(sum(relevant), 10)


def test_retrieval_agrees_with_torchmetrics() -> None:
    from torchmetrics.functional.retrieval import (
        retrieval_hit_rate,
        retrieval_reciprocal_rank,
    )

    g = torch.Generator().manual_seed(0)
    n_audio, per_clip = 30, 5
    caption_to_audio = torch.arange(n_audio).repeat_interleave(per_clip)
    similarity = torch.randn(n_audio, n_audio * per_clip, generator=g)
    similarity[caption_to_audio, torch.arange(n_audio * per_clip)] += 1.5  # make it non-trivial
    m = retrieval_metrics(similarity, caption_to_audio)
    relevant = caption_to_audio[None, :] == torch.arange(n_audio)[:, None]
    for direction, sim, rel in (
        ("audio_to_text", similarity, relevant),
        ("text_to_audio", similarity.T, relevant.T),
    ):
        for k in (1, 5, 10):
            ref = torch.stack(
                [retrieval_hit_rate(s, r, top_k=k) for s, r in zip(sim, rel, strict=False)]
            )
            assert m[f"{direction}/R@{k}"] == pytest.approx(float(ref.mean()), abs=1e-6)
        ref_mrr = torch.stack(
            [retrieval_reciprocal_rank(s, r, top_k=10) for s, r in zip(sim, rel, strict=False)]
        )
        assert m[f"{direction}/MRR@10"] == pytest.approx(float(ref_mrr.mean()), abs=1e-6)
        # torchmetrics' AP@10 divides by the relevant items found in the top 10, not by
        # min(n_relevant, 10): check ours against a plain loop instead
        ref_ap = [_ap_at_10_loop(s.tolist(), r.tolist()) for s, r in zip(sim, rel, strict=False)]
        assert m[f"{direction}/mAP@10"] == pytest.approx(sum(ref_ap) / len(ref_ap), abs=1e-6)
    assert m["audio_to_text/mAP@10"] < m["audio_to_text/MRR@10"]


def test_retrieval_rejects_clip_without_caption() -> None:
    with pytest.raises(ValueError, match=r"clips without any caption: \[1\]"):
        retrieval_metrics(torch.rand(3, 2), torch.tensor([0, 2]))
