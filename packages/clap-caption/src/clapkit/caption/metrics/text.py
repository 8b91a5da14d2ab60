"""Caption normalisation and n-gram counting shared by the metrics.

The COCO caption tools tokenise with Stanford's Java PTBTokenizer, lowercase and drop
punctuation tokens. :func:`tokenize` does the same in Python for English captions: lowercase,
split off punctuation and the PTB clitics (``'s``, ``n't``, ``'re``, ...), drop punctuation.
It matches the Java tokenizer on ordinary captions; exotic input (URLs, numbers with commas,
unicode quotes) may split differently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

# punctuation tokens the COCO tools remove after PTB tokenisation
_PUNCTUATION = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_CLITICS = re.compile(r"(?i)(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'s|'re|'ve|'ll|'d|'m|\w+(?:[-']\w+)*|\.\.\.|--|[^\w\s]")


def tokenize(caption: str) -> list[str]:
    """Lowercased word tokens of a caption, punctuation removed.

    Args:
        caption: One caption.

    Returns:
        Its tokens, e.g. ``"A dog's bark."`` -> ``["a", "dog", "'s", "bark"]``.
    """
    text = _CLITICS.sub(r"\1 \2", caption.lower())
    return [t for t in _TOKEN.findall(text) if t not in _PUNCTUATION]


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
