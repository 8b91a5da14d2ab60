"""Checking the texts a caller hands to a text encoder."""

from __future__ import annotations

from collections.abc import Iterable

_REPR_LIMIT = 80


def _short_repr(item: object) -> str:
    text = repr(item)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def check_texts(texts: Iterable[str]) -> list[str]:
    """Validate a batch of texts and return it as a list, blank texts made empty.

    A text that is empty or holds only whitespace becomes ``""``, so every blank text gets the
    same embedding: the one of the tokenizer's special tokens alone (e.g. ``[CLS] [SEP]`` for
    BERT, the end-of-text suffix for GPT2-EOT).

    Args:
        texts: A list (or any iterable that is not itself a string) of strings.

    Returns:
        The texts as a new list, with blank texts replaced by ``""``.

    Raises:
        TypeError: If ``texts`` is a single string or not iterable, or an item is not a
            string (the message names the item's index and shows its repr).
        ValueError: If there are no texts.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"texts must be a list of strings, got a single {type(texts).__name__} "
            f"{_short_repr(texts)}; wrap it in a list: [text]"
        )
    if not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    checked: list[str] = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{index}] is a {type(text).__name__}, not a str: {_short_repr(text)}"
            )
        checked.append(text if text.strip() else "")
    if not checked:
        raise ValueError("texts is empty: give at least one text")
    return checked
