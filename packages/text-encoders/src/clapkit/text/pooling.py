"""Picking one vector per text out of a transformer's hidden states."""

from __future__ import annotations

import torch
from torch import Tensor


def last_real_token_index(attention_mask: Tensor) -> Tensor:
    """Position of the last token whose attention mask is 1, per row.

    Found from the mask, never from token ids, so a text token that happens to share the pad
    id (msclap pads GPT2 with "!") is still counted as text. Works for left padding too.

    Args:
        attention_mask: 1 on real tokens, 0 on padding. Shape ``[b, s]``.

    Returns:
        Long tensor of positions, shape ``[b]``; -1 for a row without any real token.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return torch.where(attention_mask.bool(), positions, -1).amax(dim=-1)


def pool_at(hidden: Tensor, index: Tensor) -> Tensor:
    """Gather one hidden state per row.

    Args:
        hidden: Hidden states. Shape ``[b, s, d]``.
        index: Position to take in each row. Shape ``[b]``.

    Returns:
        The selected states. Shape ``[b, d]``.
    """
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, index.to(hidden.device)]


def pool_last_real_token(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Hidden state at the last real token of each row (GPT2-EOT pooling).

    Args:
        hidden: Hidden states. Shape ``[b, s, d]``.
        attention_mask: 1 on real tokens, 0 on padding. Shape ``[b, s]``.

    Returns:
        Pooled states. Shape ``[b, d]``.
    """
    return pool_at(hidden, last_real_token_index(attention_mask))
