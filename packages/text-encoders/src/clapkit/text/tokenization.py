"""Turning texts into padded id batches that keep the final special token."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

#: msclap's end-of-text suffix: a space then the token, which GPT-2 tokenises to ids 220, 50256.
EOT_SUFFIX_MSCLAP = " <|endoftext|>"
#: The bare end-of-text token, as the paper describes it (GPT-2 id 50256 alone).
EOT_SUFFIX_PLAIN = "<|endoftext|>"


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of token ids.

    Attributes:
        input_ids: Token ids, right-padded with the pad id. Shape ``[b, s]``.
        attention_mask: 1 on real tokens, 0 on padding. Shape ``[b, s]``.
        truncated: Indices of the texts that were longer than the maximum length.
    """

    input_ids: Tensor
    attention_mask: Tensor
    truncated: tuple[int, ...]


def count_trailing_special_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """How many special tokens the tokenizer appends after a text (``[SEP]``, ``</s>``, EOT).

    Args:
        tokenizer: A transformers tokenizer.

    Returns:
        The number of ids that follow the text's own ids when special tokens are added.
    """
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return len(full) - start - len(bare)
    return 0


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    suffix: str,
    max_length: int,
    tail_length: int,
    pad_token_id: int,
) -> TokenBatch:
    """Tokenise texts, cut over-long ones keeping their tail, and pad to the longest.

    Each text is tokenised whole with ``suffix`` appended (exactly as msclap builds its GPT2
    input), with the tokenizer's own special tokens. A sequence longer than ``max_length``
    keeps its first ``max_length - tail_length`` ids and its last ``tail_length`` ids, so the
    final special token (``[SEP]``, ``</s>``, end-of-text) that pooling looks for survives.

    Args:
        tokenizer: A transformers tokenizer.
        texts: The texts, already checked.
        suffix: Text appended to every text before tokenisation ("" for none).
        max_length: Longest sequence kept, in tokens.
        tail_length: How many final ids a truncated sequence keeps.
        pad_token_id: Id written into padded positions.

    Returns:
        The padded batch; ``input_ids`` and ``attention_mask`` have shape ``[b, s]`` with
        ``s`` the longest (truncated) sequence in the batch.
    """
    sequences: list[list[int]] = tokenizer(
        [text + suffix for text in texts],
        add_special_tokens=True,
        padding=False,
        truncation=False,
        return_attention_mask=False,
        verbose=False,
    )["input_ids"]
    truncated: list[int] = []
    for index, ids in enumerate(sequences):
        if len(ids) > max_length:
            sequences[index] = ids[: max_length - tail_length] + ids[len(ids) - tail_length :]
            truncated.append(index)
    width = max(len(ids) for ids in sequences)
    padded_ids = [ids + [pad_token_id] * (width - len(ids)) for ids in sequences]
    mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids in sequences]
    return TokenBatch(
        input_ids=torch.tensor(padded_ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        truncated=tuple(truncated),
    )
