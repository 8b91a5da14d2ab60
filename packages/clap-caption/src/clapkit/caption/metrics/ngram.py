"""BLEU, ROUGE-L and CIDEr-D as the COCO caption evaluation tools define them, in Python.

Inputs are already tokenised (see :func:`clapkit.caption.metrics.text.tokenize`): one token list
per prediction and a list of token lists (its references) per prediction.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from clapkit.caption.metrics.text import ngram_counts

Tokens = Sequence[str]

# the COCO BLEU scorer's smoothing constants (they only matter for zero counts)
_TINY, _SMALL = 1e-15, 1e-9


def bleu(
    predictions: Sequence[Tokens], references: Sequence[Sequence[Tokens]], max_order: int = 4
) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..``max_order`` with the closest reference length (COCO ``option="closest"``).

    Clipped n-gram matches and candidate n-gram counts are summed over the corpus; the brevity
    penalty uses the summed candidate length against the summed closest reference lengths (a
    tie goes to the shorter reference).

    Args:
        predictions: Tokens of each prediction.
        references: Token lists of the references of each prediction.
        max_order: Highest n-gram order.

    Returns:
        ``(corpus, per_item)``: corpus BLEU-n for n = 1..max_order, and the same computed on
        each item alone (``per_item[i][n-1]``).
    """
    totals = _BleuStats(max_order)
    per_item = []
    for prediction, refs in zip(predictions, references, strict=True):
        stats = _BleuStats(max_order)
        stats.add(prediction, refs)
        per_item.append(stats.scores())
        totals.merge(stats)
    return totals.scores(), per_item


class _BleuStats:
    def __init__(self, max_order: int) -> None:
        self.max_order = max_order
        self.correct = [0] * max_order
        self.guess = [0] * max_order
        self.test_length = 0
        self.ref_length = 0

    def add(self, prediction: Tokens, refs: Sequence[Tokens]) -> None:
        length = len(prediction)
        self.test_length += length
        self.ref_length += min((len(r) for r in refs), key=lambda n: (abs(n - length), n))
        for n in range(1, self.max_order + 1):
            most_in_a_ref: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                most_in_a_ref |= ngram_counts(ref, n)
            counts = ngram_counts(prediction, n)
            self.correct[n - 1] += sum(min(c, most_in_a_ref[g]) for g, c in counts.items())
            self.guess[n - 1] += max(length - n + 1, 0)

    def merge(self, other: _BleuStats) -> None:
        for n in range(self.max_order):
            self.correct[n] += other.correct[n]
            self.guess[n] += other.guess[n]
        self.test_length += other.test_length
        self.ref_length += other.ref_length

    def scores(self) -> list[float]:
        ratio = (self.test_length + _TINY) / (self.ref_length + _SMALL)
        brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
        scores, product = [], 1.0
        for n in range(self.max_order):
            product *= (self.correct[n] + _TINY) / (self.guess[n] + _SMALL)
            scores.append(product ** (1 / (n + 1)) * brevity)
        return scores


def _lcs_length(a: Tokens, b: Tokens) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(
    predictions: Sequence[Tokens], references: Sequence[Sequence[Tokens]], beta: float = 1.2
) -> tuple[float, list[float]]:
    """ROUGE-L F-score per COCO: best LCS precision and best LCS recall over the references.

    ``F = (1 + beta^2) P R / (R + beta^2 P)`` with ``P = max_r LCS/len(pred)`` and
    ``R = max_r LCS/len(ref)`` (each maximised separately, as the COCO code does).

    Returns:
        ``(corpus_mean, per_item)``.
    """
    per_item = []
    for prediction, refs in zip(predictions, references, strict=True):
        lcs = [_lcs_length(prediction, ref) for ref in refs]
        precision = max(c / len(prediction) if prediction else 0.0 for c in lcs)
        recall = max(c / len(ref) if ref else 0.0 for c, ref in zip(lcs, refs, strict=True))
        if precision > 0 and recall > 0:
            score = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
        else:
            score = 0.0
        per_item.append(score)
    return sum(per_item) / len(per_item), per_item


def cider_d(
    predictions: Sequence[Tokens],
    references: Sequence[Sequence[Tokens]],
    max_order: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """CIDEr-D (Vedantam et al., 2015) as in the COCO tools: clipped TF-IDF cosine, length penalty.

    Document frequencies come from the references of the evaluated corpus (an n-gram's count is
    the number of items whose references contain it); each n-gram weight is
    ``tf * (log(N) - log(max(1, df)))``. Per order n, the similarity of prediction and reference
    is ``sum_g min(w_pred, w_ref) * w_ref / (|w_pred| |w_ref|)`` times
    ``exp(-(len_pred - len_ref)^2 / (2 sigma^2))``; the item score is 10 x the mean over orders
    and references.

    Returns:
        ``(corpus_mean, per_item)``.
    """
    ref_counts = [[_all_ngrams(ref, max_order) for ref in refs] for refs in references]
    document_frequency: Counter[tuple[str, ...]] = Counter()
    for counts in ref_counts:
        document_frequency.update({g for c in counts for g in c})
    log_items = math.log(float(len(references)))

    def weights(
        counts: Counter[tuple[str, ...]],
    ) -> tuple[list[dict[tuple[str, ...], float]], list[float]]:
        vectors: list[dict[tuple[str, ...], float]] = [{} for _ in range(max_order)]
        for gram, tf in counts.items():
            idf = log_items - math.log(max(1.0, float(document_frequency[gram])))
            vectors[len(gram) - 1][gram] = tf * idf
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vectors]
        return vectors, norms

    per_item = []
    for prediction, counts_of_refs in zip(predictions, ref_counts, strict=True):
        pred_counts = _all_ngrams(prediction, max_order)
        pred_vectors, pred_norms = weights(pred_counts)
        total = 0.0
        for ref_count in counts_of_refs:
            ref_vectors, ref_norms = weights(ref_count)
            # the COCO code measures length in bigrams (one less than tokens, 0 when empty)
            delta = _bigrams(pred_counts) - _bigrams(ref_count)
            penalty = math.exp(-(delta**2) / (2 * sigma**2))
            for n in range(max_order):
                dot = sum(
                    min(w, ref_vectors[n].get(g, 0.0)) * ref_vectors[n].get(g, 0.0)
                    for g, w in pred_vectors[n].items()
                )
                if pred_norms[n] != 0 and ref_norms[n] != 0:
                    dot /= pred_norms[n] * ref_norms[n]
                total += dot * penalty
        per_item.append(10.0 * total / max_order / len(counts_of_refs))
    return sum(per_item) / len(per_item), per_item


def _bigrams(counts: Counter[tuple[str, ...]]) -> int:
    return sum(c for g, c in counts.items() if len(g) == 2)


def _all_ngrams(tokens: Tokens, max_order: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_order + 1):
        counts.update(ngram_counts(tokens, n))
    return counts
