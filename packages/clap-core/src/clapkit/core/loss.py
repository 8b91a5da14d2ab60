"""Symmetric contrastive (InfoNCE) loss over the global batch, correct across processes."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContrastiveLoss", "gather_with_grad"]


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

    Args:
        local_loss: compute only this rank's rows of the logits (see above).
    """

    def __init__(self, *, local_loss: bool = False) -> None:
        super().__init__()
        self.local_loss = local_loss

    def forward(self, audio_embeds: Tensor, text_embeds: Tensor, logit_scale_exp: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            audio_embeds: L2-normalised audio embeddings of this rank. Shape ``[b, d]``.
            text_embeds: L2-normalised text embeddings of the same pairs. Shape ``[b, d]``.
            logit_scale_exp: the multiplier applied to cosine similarities (``exp(logit_scale)``),
                a scalar tensor (may require grad).

        Returns:
            The scalar loss.

        Raises:
            ValueError: if the two batches do not have the same shape or are not 2-D.
        """
        if audio_embeds.ndim != 2 or audio_embeds.shape != text_embeds.shape:
            raise ValueError(
                "audio_embeds and text_embeds must both be [b, d] with the same shape, got "
                f"{tuple(audio_embeds.shape)} and {tuple(text_embeds.shape)}"
            )
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
