"""Symmetric contrastive (InfoNCE) loss over the global batch, correct across processes."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContrastiveLoss", "gather_padded_with_grad", "gather_with_grad"]


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands every rank the sum of the gradients of its own slice.

    Each rank computes a loss from the gathered tensor; the gradient of the *sum* of those losses
    with respect to a rank's local rows is the sum over ranks of the gradients flowing into that
    rank's slice. DDP then averages parameter gradients, which turns that sum back into the
    gradient of the (identical or summed-then-averaged) global loss. ``all_reduce`` is used in the
    backward instead of ``reduce_scatter`` because gloo has no reduce-scatter.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        world_size = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``tensor`` from every rank along dim 0, keeping the autograd graph.

    Ranks may hold different numbers of rows (e.g. the last batch of an epoch): rows are padded to
    the largest count for the collective and the padding is removed again.

    Args:
        tensor: this rank's rows. Shape ``[b, d]``.

    Returns:
        The rows of all ranks in rank order (shape ``[B, d]``, ``B`` the sum of every rank's
        ``b``) and the index of this rank's first row in it. Without an initialised process
        group (or with one process) the input itself and 0.
    """
    if not _distributed():
        return tensor, 0
    rank = dist.get_rank()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    offset = sum(counts[:rank])
    largest = max(counts)
    if all(c == largest for c in counts):
        return _AllGatherWithGrad.apply(tensor), offset
    padded = F.pad(tensor, (0, 0, 0, largest - tensor.shape[0]))
    gathered = _AllGatherWithGrad.apply(padded)
    pieces = [gathered[r * largest : r * largest + c] for r, c in enumerate(counts)]
    return torch.cat(pieces, dim=0), offset


def gather_padded_with_grad(
    tensor: Tensor, rows: int, valid: Tensor | None = None
) -> tuple[Tensor, Tensor, int]:
    """Like `gather_with_grad`, with every rank's rows padded to ``rows``: no host sync.

    `gather_with_grad` reads every rank's row count back to the host to cut the padding out,
    which stops a GPU from queueing work ahead. Here the shapes are fixed in advance (a
    micro-batch never holds more than ``rows`` pairs) and the padding is marked instead of
    removed: the gathered validity mask says which rows are real.

    Args:
        tensor: this rank's rows. Shape ``[b, d]``, ``b <= rows``.
        rows: the row count every rank pads to.
        valid: which of this rank's rows are real (``[b]`` bool); None = all of them.

    Returns:
        ``(gathered [W * rows, d], valid [W * rows] bool, offset)``: rank ``r``'s rows start at
        ``r * rows`` (``offset`` is this rank's); ``W`` the world size (1 without a process
        group).

    Raises:
        ValueError: ``b > rows`` or a ``valid`` mask of another length.
    """
    count = tensor.shape[0]
    if count > rows:
        raise ValueError(f"{count} rows do not fit the gather's {rows} rows per rank")
    if valid is None:
        valid = torch.ones(count, dtype=torch.bool, device=tensor.device)
    elif valid.shape != (count,):
        raise ValueError(f"valid must be [{count}], got {tuple(valid.shape)}")
    padded = F.pad(tensor, (0, 0, 0, rows - count))
    mask = F.pad(valid.to(torch.uint8), (0, rows - count))
    if not _distributed():
        return padded, mask.bool(), 0
    masks = [torch.empty_like(mask) for _ in range(dist.get_world_size())]
    dist.all_gather(masks, mask)
    return _AllGatherWithGrad.apply(padded), torch.cat(masks).bool(), dist.get_rank() * rows


def _hide_columns(logits: Tensor, valid_columns: Tensor) -> Tensor:
    """A padded or invalid column is no candidate for any row."""
    return logits.masked_fill(~valid_columns, torch.finfo(logits.dtype).min)


def _masked_cross_entropy(logits: Tensor, labels: Tensor, valid_rows: Tensor) -> Tensor:
    """Mean cross-entropy over the valid rows (0 when there is none)."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    weights = valid_rows.to(losses.dtype)
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


class ContrastiveLoss(nn.Module):
    """Symmetric cross-entropy between audio and text embeddings (CLAP / CLIP loss).

    ``loss = 0.5 * (CE(logits_audio_to_text) + CE(logits_text_to_audio))`` with
    ``logits = logit_scale_exp * audio @ text.T`` and the matching pair on the diagonal
    (paper Eq. 1-3). When ``torch.distributed`` is initialised the features of every rank are
    gathered *with* their gradient (never ``accelerator.gather``, which has none):

    - ``local_loss=False`` (default): every rank computes the loss over the whole global batch
      (``B x B`` logits); the loss value is identical on every rank and equals the loss one
      process would compute over the concatenated batch.
    - ``local_loss=True`` (open_clip's option, ``b x B`` logits, less memory): this rank's rows
      against the global columns, labels offset by this rank's first row. The loss on a rank is
      the mean over its own rows; the mean over ranks equals the global loss when every rank
      holds the same number of rows.

    In both modes, gradients averaged by DDP equal the gradients of the global loss.

    With ``pad_to`` (training loops, ``torch.compile``) every rank's rows are padded to that
    count for the gather and the padding is masked out of the logits
    (`gather_padded_with_grad`): the loss is the same, the shapes are fixed and nothing is read
    back to the host. Rows a caller marks invalid (``valid``) are left out the same way, so a
    rank whose micro-batch lost every clip can send a stand-in row and keep the collectives in
    step without asking the others.

    Args:
        local_loss: compute only this rank's rows of the logits (see above).
        pad_to: rows per rank for the padded gather (the largest micro-batch, or the sum of an
            accumulated update's); None = gather the exact rows (reads the row counts back).
    """

    def __init__(self, *, local_loss: bool = False, pad_to: int | None = None) -> None:
        super().__init__()
        if pad_to is not None and pad_to < 1:
            raise ValueError(f"pad_to must be a positive row count, got {pad_to}")
        self.local_loss = local_loss
        self.pad_to = pad_to

    def forward(
        self,
        audio_embeds: Tensor,
        text_embeds: Tensor,
        logit_scale_exp: Tensor,
        valid: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss.

        Args:
            audio_embeds: L2-normalised audio embeddings of this rank. Shape ``[b, d]``.
            text_embeds: L2-normalised text embeddings of the same pairs. Shape ``[b, d]``.
            logit_scale_exp: the multiplier applied to cosine similarities (``exp(logit_scale)``),
                a scalar tensor (may require grad).
            valid: which pairs are real (``[b]`` bool; needs ``pad_to``); None = all.

        Returns:
            The scalar loss.

        Raises:
            ValueError: if the two batches do not have the same shape or are not 2-D, more rows
                than ``pad_to``, or ``valid`` without ``pad_to``.
        """
        if audio_embeds.ndim != 2 or audio_embeds.shape != text_embeds.shape:
            raise ValueError(
                "audio_embeds and text_embeds must both be [b, d] with the same shape, got "
                f"{tuple(audio_embeds.shape)} and {tuple(text_embeds.shape)}"
            )
        if self.pad_to is not None:
            return self._padded(audio_embeds, text_embeds, logit_scale_exp, valid)
        if valid is not None:
            raise ValueError("valid rows need ContrastiveLoss(pad_to=...)")
        all_audio, offset = gather_with_grad(audio_embeds)
        all_text, _ = gather_with_grad(text_embeds)
        if self.local_loss:
            logits_audio = logit_scale_exp * audio_embeds @ all_text.T
            logits_text = logit_scale_exp * text_embeds @ all_audio.T
            labels = torch.arange(audio_embeds.shape[0], device=audio_embeds.device) + offset
        else:
            logits_audio = logit_scale_exp * all_audio @ all_text.T
            logits_text = logits_audio.T
            labels = torch.arange(all_audio.shape[0], device=audio_embeds.device)
        return 0.5 * (F.cross_entropy(logits_audio, labels) + F.cross_entropy(logits_text, labels))

    def _padded(
        self, audio: Tensor, text: Tensor, logit_scale_exp: Tensor, valid: Tensor | None
    ) -> Tensor:
        assert self.pad_to is not None
        all_audio, mask, offset = gather_padded_with_grad(audio, self.pad_to, valid)
        all_text, _, _ = gather_padded_with_grad(text, self.pad_to, valid)
        if self.local_loss:
            rows = mask[offset : offset + audio.shape[0]]
            labels = torch.arange(audio.shape[0], device=audio.device) + offset
            logits_audio = logit_scale_exp * audio @ all_text.T
            logits_text = logit_scale_exp * text @ all_audio.T
        else:
            rows = mask
            labels = torch.arange(all_audio.shape[0], device=audio.device)
            logits_audio = logit_scale_exp * all_audio @ all_text.T
            logits_text = logits_audio.T
        return 0.5 * (
            _masked_cross_entropy(_hide_columns(logits_audio, mask), labels, rows)
            + _masked_cross_entropy(_hide_columns(logits_text, mask), labels, rows)
        )
