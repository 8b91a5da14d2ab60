"""One call for the captioning metrics of AudioCaps and Clotho (5-reference protocol)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clapkit.caption.metrics import java_tools
from clapkit.caption.metrics.ngram import bleu, cider_d, rouge_l
from clapkit.caption.metrics.ptb import Backend, ptb_tokenize
from clapkit.caption.metrics.text import check_corpus

logger = logging.getLogger(__name__)

ALL_METRICS = ("bleu", "rouge_l", "cider_d", "meteor", "spice", "spider")


@dataclass
class CaptionScores:
    """Scores of a set of predictions.

    Attributes:
        corpus: Metric name -> corpus score (``bleu_1`` .. ``bleu_4``, ``rouge_l``, ``cider_d``,
            and when their Java tools ran ``meteor``, ``spice``, ``spider``).
        per_item: Metric name -> the score of each prediction.
        missing: Metric name -> why it was not computed.
    """

    corpus: dict[str, float]
    per_item: dict[str, list[float]]
    missing: dict[str, str] = field(default_factory=dict)


def evaluate_captions(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    metrics: Sequence[str] = ALL_METRICS,
    references_per_item: int | None = None,
    java: Literal["auto", "require", "skip"] = "auto",
    meteor_jar: str | Path | None = None,
    spice_jar: str | Path | None = None,
    ptb: Backend | None = None,
    ptb_jar: str | Path | None = None,
) -> CaptionScores:
    """Score predicted captions against their references, as the COCO caption tools do.

    Captions are tokenised as pycocoevalcap does (``ptb_tokenize``: Stanford's PTB tokenizer,
    lowercased, punctuation tokens removed). BLEU, ROUGE-L and CIDEr-D are computed in Python
    and equal the COCO tools' on the same tokens. METEOR and SPICE run their Java programs;
    SPIDEr is the mean of CIDEr-D and SPICE.

    Args:
        predictions: One predicted caption per clip.
        references: The reference captions of each clip.
        metrics: Which of ``bleu``, ``rouge_l``, ``cider_d``, ``meteor``, ``spice``, ``spider``.
        references_per_item: If set, every clip must have exactly this many references
            (AudioCaps and Clotho test sets: 5).
        java: ``"auto"`` computes the Java metrics when their tools are found and otherwise
            records why in ``missing`` (and logs a warning); ``"require"`` raises instead;
            ``"skip"`` never runs Java.
        meteor_jar: Path of ``meteor-1.5.jar`` (else found as :func:`java_tools.find_jar` says).
        spice_jar: Path of ``spice-1.0.jar``.
        ptb: PTB tokenizer backend: ``"java"`` (Stanford's jar, exactly the COCO tools'
            tokens), ``"python"`` (clapkit's scanner, the same tokens on ordinary captions) or
            ``"auto"``; the default is ``"auto"``, or ``"python"`` when ``java="skip"``.
        ptb_jar: Path of ``stanford-corenlp-3.4.1.jar`` (else found as ``find_jar`` says).

    Returns:
        The corpus and per-item scores, and the metrics left out with the reason.

    Raises:
        ValueError: On malformed input (naming the item) or an unknown metric.
        JavaToolMissingError: With ``java="require"`` when METEOR/SPICE cannot run.
    """
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(ALL_METRICS)}")
    check_corpus(predictions, references)
    if references_per_item is not None:
        for index, refs in enumerate(references):
            if len(refs) != references_per_item:
                raise ValueError(
                    f"item {index} has {len(refs)} references, the protocol needs "
                    f"{references_per_item}"
                )
    backend: Backend = ptb if ptb is not None else ("python" if java == "skip" else "auto")
    # one tokenizer run over the whole corpus (the Java tokenizer starts once)
    flat = list(predictions) + [r for refs in references for r in refs]
    tokens = ptb_tokenize(flat, backend=backend, jar=ptb_jar)
    pred_tokens, rest = tokens[: len(predictions)], iter(tokens[len(predictions) :])
    ref_tokens = [[next(rest) for _ in refs] for refs in references]
    scores = CaptionScores(corpus={}, per_item={})
    if "bleu" in metrics:
        corpus, items = bleu(pred_tokens, ref_tokens)
        for n in range(4):
            scores.corpus[f"bleu_{n + 1}"] = corpus[n]
            scores.per_item[f"bleu_{n + 1}"] = [item[n] for item in items]
    if "rouge_l" in metrics:
        scores.corpus["rouge_l"], scores.per_item["rouge_l"] = rouge_l(pred_tokens, ref_tokens)
    if "cider_d" in metrics or "spider" in metrics:
        scores.corpus["cider_d"], scores.per_item["cider_d"] = cider_d(pred_tokens, ref_tokens)
    joined_preds = [" ".join(t) for t in pred_tokens]
    joined_refs = [[" ".join(t) for t in refs] for refs in ref_tokens]
    wanted_java = [
        m for m in ("meteor", "spice") if m in metrics or (m == "spice" and "spider" in metrics)
    ]
    for metric in wanted_java:
        if java == "skip":
            scores.missing[metric] = "Java metrics skipped (java='skip')"
            continue
        try:
            run = java_tools.meteor if metric == "meteor" else java_tools.spice
            jar = meteor_jar if metric == "meteor" else spice_jar
            scores.corpus[metric], scores.per_item[metric] = run(joined_preds, joined_refs, jar)
        except java_tools.JavaToolMissingError as error:
            if java == "require":
                raise
            scores.missing[metric] = str(error)
            logger.warning("%s left out: %s", metric.upper(), error)
    if "spider" in metrics:
        if "spice" in scores.corpus:
            scores.corpus["spider"] = (scores.corpus["cider_d"] + scores.corpus["spice"]) / 2
            scores.per_item["spider"] = [
                (c + s) / 2
                for c, s in zip(scores.per_item["cider_d"], scores.per_item["spice"], strict=True)
            ]
        else:
            scores.missing["spider"] = (
                "SPIDEr = mean(CIDEr-D, SPICE) needs SPICE: "
                + scores.missing.get("spice", "not computed")
            )
    if "cider_d" not in metrics:
        scores.corpus.pop("cider_d", None)
        scores.per_item.pop("cider_d", None)
    return scores
