"""Caption tokenisation and n-gram counting shared by the metrics.

Captions are scored on PTB tokens with the COCO tools' punctuation removed
(:mod:`clapkit.caption.metrics.ptb`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from clapkit.caption.metrics.ptb import Backend, ptb_tokenize


def tokenize(caption: str, *, backend: Backend = "python") -> list[str]:
    """Lowercased PTB tokens of one caption, the COCO tools' punctuation removed.

    For a whole corpus use :func:`~clapkit.caption.metrics.ptb.ptb_tokenize`, which starts the
    Java tokenizer once for all captions.

    Args:
        caption: One caption.
        backend: ``"python"`` (default), ``"java"`` or ``"auto"``, as in ``ptb_tokenize``.

    Returns:
        Its tokens, e.g. ``'A dog\u2019s bark, "woof"!'`` -> ``["a", "dog", "'s", "bark", "woof"]``.
    """
    return ptb_tokenize([caption], backend=backend)[0]


def ngram_counts(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of every n-gram of order ``n`` in ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def check_corpus(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Validate a (predictions, references) corpus.

    Raises:
        ValueError: Naming the item when lengths differ, an item has no reference, or a caption
            is not a string.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be sequences of captions, not a string")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists: give one "
            "list of references per prediction"
        )
    if not predictions:
        raise ValueError("no captions to score")
    for index, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(prediction, str):
            raise ValueError(f"prediction {index} is {type(prediction).__name__}, not a string")
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"item {index}: references must be a non-empty list of captions")
        if not all(isinstance(r, str) for r in refs):
            raise ValueError(f"item {index}: every reference must be a string")
