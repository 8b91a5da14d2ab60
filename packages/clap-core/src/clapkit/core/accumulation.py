"""Gradient accumulation for the contrastive loss that keeps the whole batch's negatives.

Accumulating ``k`` micro-batches the usual way (one loss per micro-batch) shows the contrastive
loss only the negatives of one micro-batch. `accumulated_contrastive_step` instead gives the
loss, and the accumulated gradient, of one step over the whole (global) batch:

1. pass 1, without autograd: the embeddings of every micro-batch;
2. pass 2, for each micro-batch ``i``: its embeddings again, with autograd, put in place of the
   cached ``i``-th ones; the loss over all ``k`` micro-batches (and, through the loss's own
   gather, over every rank) is backpropagated. The gradient reaching the parameters through
   micro-batch ``i`` is exactly its share of the full-batch gradient, so the ``k`` backwards sum
   to the full-batch gradient.

Semantics fixed here (and tested in ``tests/test_accumulation.py``):

- **Randomness.** Pass 2 must see the numbers pass 1 saw. Before each pass-1 forward the CPU
  RNG, the CUDA RNG of every device the model or the micro-batch lives on and every
  ``torch.Generator`` held as a module attribute (e.g. ``clapkit.audio``'s ``set_generator``
  for SpecAugment) are saved; pass 2 restores them before the same micro-batch. Afterwards the
  generators stand where one forward per micro-batch would have left them.
- **Buffers (BatchNorm running statistics, ``num_batches_tracked``, any buffer a forward
  updates).** Every buffer of the model is saved before pass 1 and restored after it, so the
  buffers are updated once per micro-batch, as ``k`` ordinary forwards would update them, and
  every pass-2 forward sees the buffers its pass-1 twin saw (which also covers modules whose
  training output depends on a buffer). BatchNorm in training mode normalises each
  micro-batch with that micro-batch's statistics, like DDP without ``SyncBatchNorm``: the
  result equals a step whose forward runs micro-batch by micro-batch, and equals one forward
  of the whole batch only when no layer mixes rows (BatchNorm in eval mode, frozen, or absent).
- **Logit scale.** It enters every micro-batch's loss; its gradient is taken in the last
  backward only (earlier ones see it detached), so it is counted once, not ``k`` times.
- **Gradient sync.** ``no_sync`` (e.g. ``lambda: accelerator.no_sync(model)`` or
  ``model.no_sync`` of a DDP module) wraps forward and backward of every micro-batch but the
  last, so gradients are all-reduced once. The losses must not be divided by ``k``: do not
  combine this with ``Accelerator(gradient_accumulation_steps=k)`` (whose ``backward``
  divides), run the optimiser step after the call.

Every rank must pass the same number of micro-batches (each pass-2 loss gathers across ranks);
sizes may differ between micro-batches and between ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from clapkit.core.loss import ContrastiveLoss
from clapkit.core.model import ClapOutput

__all__ = ["accumulated_contrastive_step", "split_micro_batches"]


@dataclass
class _RngState:
    """The state of every generator a forward may draw from."""

    cpu: Tensor
    cuda: dict[int, Tensor] = field(default_factory=dict)
    generators: list[tuple[torch.Generator, Tensor]] = field(default_factory=list)


def _capture_rng(cuda_devices: Sequence[int], generators: Sequence[torch.Generator]) -> _RngState:
    return _RngState(
        cpu=torch.get_rng_state(),
        cuda={d: torch.cuda.get_rng_state(d) for d in cuda_devices},
        generators=[(g, g.get_state()) for g in generators],
    )


def _restore_rng(state: _RngState) -> None:
    torch.set_rng_state(state.cpu)
    for device, cuda_state in state.cuda.items():
        torch.cuda.set_rng_state(cuda_state, device)
    for generator, generator_state in state.generators:
        generator.set_state(generator_state)


def _tensors(value: Any) -> Iterable[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _cuda_devices(
    module: nn.Module | None, micro_batches: Sequence[Mapping[str, Any]]
) -> list[int]:
    tensors: list[Tensor] = list(_tensors(list(micro_batches)))
    if module is not None:
        tensors.extend(module.parameters())
        tensors.extend(module.buffers())
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _module_generators(module: nn.Module | None) -> list[torch.Generator]:
    if module is None:
        return []
    found: dict[int, torch.Generator] = {}
    for submodule in module.modules():
        for value in vars(submodule).values():
            if isinstance(value, torch.Generator):
                found[id(value)] = value
    return list(found.values())


def _check_output(output: Any) -> ClapOutput:
    if not isinstance(output, ClapOutput):
        raise TypeError(
            "the model must return a ClapOutput (audio_embeds, text_embeds, logit_scale_exp), "
            f"got {type(output).__name__}"
        )
    return output


def _check_same_count_on_every_rank(count: int, device: torch.device) -> None:
    # a rank with fewer micro-batches would leave the others waiting in the loss's gather
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    mine = torch.tensor([count], device=device, dtype=torch.long)
    counts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, mine)
    seen = [int(c.item()) for c in counts]
    if len(set(seen)) > 1:
        raise ValueError(f"every rank must pass the same number of micro-batches, got {seen}")


def _concat_valid(
    masks: Sequence[Tensor | None], micro_batches: Sequence[Mapping[str, Any]]
) -> Tensor:
    """One ``[B]`` validity mask: the given masks, all-True for micro-batches without one."""
    parts = []
    for mask, batch in zip(masks, micro_batches, strict=True):
        if mask is None:
            rows = next(iter(_tensors(batch))).shape[0]
            device = next(iter(_tensors(batch))).device
            mask = torch.ones(rows, dtype=torch.bool, device=device)
        parts.append(mask)
    return torch.cat(parts)


def _default_backward(loss: Tensor) -> None:
    loss.backward()


def accumulated_contrastive_step(
    model: Callable[..., ClapOutput],
    micro_batches: Sequence[Mapping[str, Any]],
    loss_fn: ContrastiveLoss,
    *,
    backward: Callable[[Tensor], None] | None = None,
    no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
    check_ranks: bool = True,
) -> Tensor:
    """Accumulate the gradient of the contrastive loss over the whole batch of ``k`` micro-batches.

    After the call the parameters' ``.grad`` hold (added to whatever they held before) the
    gradient of ``loss_fn`` over the concatenation of all micro-batches (of all ranks), and the
    returned value is that loss; see the module docstring for randomness, buffers, the logit
    scale and gradient sync. Call the optimiser step (and ``zero_grad``) afterwards. With one
    micro-batch this is a plain forward and backward.

    Shapes (micro-batch ``i`` holds ``b_i`` pairs, ``B = sum(b_i)``)::

        model(**micro_batches[i]) -> ClapOutput(audio_embeds [b_i, d], text_embeds [b_i, d],
                                                logit_scale_exp [])
        loss_fn(audio [B, d], text [B, d], logit_scale_exp [])  # k times, with grad via b_i rows

    Args:
        model: the model (e.g. a DDP-wrapped or accelerate-prepared `ClapModel`); called as
            ``model(**micro_batch)``. Buffers and module-held generators are handled when it is
            an ``nn.Module``.
        micro_batches: keyword arguments of ``model`` per micro-batch (e.g. ``waveform``,
            ``input_ids``, ``attention_mask``); see `split_micro_batches`.
        loss_fn: the contrastive loss (gathers across ranks itself).
        backward: called with each of the ``k`` losses (e.g. ``accelerator.backward`` of an
            accelerator without gradient accumulation, or a grad scaler's
            ``lambda loss: scaler.scale(loss).backward()``); default ``loss.backward()``.
        no_sync: returns the context that suspends gradient all-reduce; it wraps all but the
            last micro-batch's forward and backward.
        check_ranks: check that every rank passed as many micro-batches (a rank with fewer
            would leave the others waiting); the check reads a count back to the host, so a
            training loop whose loader already guarantees it passes False.

    A micro-batch may carry ``valid`` (``[b_i]`` bool, which pairs are real): it is not given
    to the model but to the loss (``ContrastiveLoss(pad_to=...)``), concatenated over the
    micro-batches.

    Returns:
        The full-batch loss, a detached scalar.

    Raises:
        ValueError: if ``micro_batches`` is empty, or ranks pass different numbers of them.
        TypeError: if the model does not return a `ClapOutput`.
    """
    if len(micro_batches) == 0:
        raise ValueError("accumulated_contrastive_step needs at least one micro-batch")
    run_backward = backward or _default_backward
    masks = [batch.get("valid") for batch in micro_batches]
    valid = None if all(m is None for m in masks) else _concat_valid(masks, micro_batches)
    micro_batches = [{k: v for k, v in b.items() if k != "valid"} for b in micro_batches]
    extra = {} if valid is None else {"valid": valid}
    k = len(micro_batches)
    if k == 1:  # nothing to cache: the ordinary step
        out = _check_output(model(**micro_batches[0]))
        loss = loss_fn(out.audio_embeds, out.text_embeds, out.logit_scale_exp, **extra)
        run_backward(loss)
        return loss.detach()

    module = model if isinstance(model, nn.Module) else None
    cuda_devices = _cuda_devices(module, micro_batches)
    generators = _module_generators(module)
    buffers = [] if module is None else list(module.buffers())
    saved_buffers = [b.detach().clone() for b in buffers]

    # pass 1: every micro-batch's embeddings without autograd, recording the RNG before each
    rng_states: list[_RngState] = []
    cached_audio: list[Tensor] = []
    cached_text: list[Tensor] = []
    with torch.no_grad():
        for micro_batch in micro_batches:
            rng_states.append(_capture_rng(cuda_devices, generators))
            out = _check_output(model(**micro_batch))
            cached_audio.append(out.audio_embeds.detach())
            cached_text.append(out.text_embeds.detach())
        for buffer, saved in zip(buffers, saved_buffers, strict=True):
            buffer.copy_(saved)
    after_pass_one = _capture_rng(cuda_devices, generators)
    if check_ranks:
        _check_same_count_on_every_rank(k, cached_audio[0].device)

    # pass 2: each micro-batch with autograd against the cached rest of the batch
    loss = torch.zeros(())
    for i, micro_batch in enumerate(micro_batches):
        last = i == k - 1
        context = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with context:
            _restore_rng(rng_states[i])
            out = _check_output(model(**micro_batch))
            audio = torch.cat([*cached_audio[:i], out.audio_embeds, *cached_audio[i + 1 :]])
            text = torch.cat([*cached_text[:i], out.text_embeds, *cached_text[i + 1 :]])
            # d loss / d scale is whole in every pass: let exactly one backward carry it
            scale = out.logit_scale_exp if last else out.logit_scale_exp.detach()
            loss = loss_fn(audio, text, scale, **extra)
            run_backward(loss)
    _restore_rng(after_pass_one)
    return loss.detach()


def split_micro_batches(batch: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """Cut a batch of model keyword arguments into ``k`` micro-batches along dim 0.

    Tensors are sliced (views, no copy; sizes differ by at most one row), lists and tuples
    (e.g. caption strings) the same way; anything else is passed to every micro-batch
    unchanged.

    Args:
        batch: e.g. ``{"waveform": [B, t], "input_ids": [B, s], "attention_mask": [B, s]}``.
        k: number of micro-batches, ``1 <= k <= B``.

    Returns:
        ``k`` dicts with the same keys; micro-batch ``i`` holds rows ``i * B // k`` onwards.

    Raises:
        ValueError: if ``k`` is not in ``[1, B]``, nothing can be split or the batched entries
            disagree on ``B``.
    """
    rows = {
        key: (value.shape[0] if isinstance(value, Tensor) else len(value))
        for key, value in batch.items()
        if isinstance(value, (Tensor, list, tuple))
    }
    if not rows:
        raise ValueError("the batch holds no tensor, list or tuple to split")
    if len(set(rows.values())) != 1:
        raise ValueError(f"the batched entries must share their first dimension, got {rows}")
    total = next(iter(rows.values()))
    if not 1 <= k <= total:
        raise ValueError(f"k must be between 1 and the batch size {total}, got {k}")
    bounds = [i * total // k for i in range(k + 1)]
    parts: list[dict[str, Any]] = [{} for _ in range(k)]
    for key, value in batch.items():
        for i in range(k):
            if isinstance(value, Tensor):
                parts[i][key] = value[bounds[i] : bounds[i + 1]]
            elif isinstance(value, (list, tuple)):
                parts[i][key] = type(value)(value[bounds[i] : bounds[i + 1]])
            else:
                parts[i][key] = value
    return parts
