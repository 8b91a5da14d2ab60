"""accumulated_contrastive_step: k micro-batches give the loss and gradients of one full step."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clapkit.core import (
    ClapOutput,
    ContrastiveLoss,
    accumulated_contrastive_step,
    split_micro_batches,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}
CAPTIONS = [
    "a dog barks in the rain",
    "birds sing",
    "a car horn",
    "music with piano and drums",
    "a siren wails and glass breaks",
    "someone speaks",
    "the morning forest",
    "rain on a car",
]
# micro-batch sizes of the global batch of 8; (3, 1, 4) is the unequal case
SPLITS = [(8,), (4, 4), (2, 2, 2, 2), (3, 1, 4)]


def _batch(model: Any) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(3)
    tokens = model.text_encoder.tokenize(CAPTIONS)
    return {"waveform": torch.randn(len(CAPTIONS), 8000, generator=g) * 0.1, **tokens}


def _split(batch: dict[str, Tensor], sizes: tuple[int, ...]) -> list[dict[str, Tensor]]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [{k: v[s : s + n] for k, v in batch.items()} for s, n in zip(starts, sizes, strict=True)]


def _grads(model: nn.Module) -> dict[str, Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _assert_same_grads(got: dict[str, Tensor | None], want: dict[str, Tensor | None]) -> None:
    assert got.keys() == want.keys()
    for name, grad in want.items():
        if grad is None:
            assert got[name] is None, name
        else:
            assert got[name] is not None, name
            torch.testing.assert_close(got[name], grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")


def _full_step(
    model: Any, micro_batches: list[dict[str, Tensor]], loss_fn: ContrastiveLoss
) -> Tensor:
    """One step over the whole batch, its forward run micro-batch by micro-batch (so that
    dropout draws and batch-norm statistics are those a chunked forward sees)."""
    outs = [model(**mb) for mb in micro_batches]
    audio = torch.cat([o.audio_embeds for o in outs])
    text = torch.cat([o.text_embeds for o in outs])
    loss = loss_fn(audio, text, outs[-1].logit_scale_exp)
    loss.backward()
    return loss.detach()


def _freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@pytest.mark.parametrize("sizes", SPLITS, ids=lambda s: "-".join(map(str, s)))
def test_equals_one_whole_batch_forward(tiny_model: Any, sizes: tuple[int, ...]) -> None:
    # eval mode: no dropout, batch norm on running statistics, so no layer mixes rows and one
    # forward of all 8 pairs is the reference
    reference = copy.deepcopy(tiny_model)
    batch = _batch(tiny_model)
    loss_fn = ContrastiveLoss()
    want = loss_fn(**vars(reference(**batch)))
    want.backward()

    got = accumulated_contrastive_step(tiny_model, _split(batch, sizes), loss_fn)
    assert not got.requires_grad
    torch.testing.assert_close(got, want.detach(), **TOL)
    _assert_same_grads(_grads(tiny_model), _grads(reference))
    assert tiny_model.logit_scale.grad.abs() > 1e-4  # the scale's gradient is checked, not 0


def test_valid_masks_reach_the_padded_loss(tiny_model: Any) -> None:
    # micro-batches (3, 1, 4); rows 1 and 3 marked invalid: the step equals one over the others
    reference = copy.deepcopy(tiny_model)
    batch = _batch(tiny_model)
    keep = torch.tensor([True, False, True, False, True, True, True, True])
    want = ContrastiveLoss()(**vars(reference(**{k: v[keep] for k, v in batch.items()})))
    want.backward()
    micro_batches = _split({**batch, "valid": keep}, (3, 1, 4))
    got = accumulated_contrastive_step(
        tiny_model, micro_batches, ContrastiveLoss(pad_to=8), check_ranks=False
    )
    torch.testing.assert_close(got, want.detach(), **TOL)
    _assert_same_grads(_grads(tiny_model), _grads(reference))


@pytest.mark.parametrize("sizes", SPLITS, ids=lambda s: "-".join(map(str, s)))
def test_dropout_draws_the_same_numbers_in_both_passes(
    tiny_model: Any, sizes: tuple[int, ...]
) -> None:
    tiny_model.train()  # msclap projection (p=0.5) and GPT-2 dropout active
    _freeze_batchnorm(tiny_model)
    reference = copy.deepcopy(tiny_model)
    micro_batches = _split(_batch(tiny_model), sizes)
    loss_fn = ContrastiveLoss()

    torch.manual_seed(11)
    want = _full_step(reference, micro_batches, loss_fn)
    after_reference = torch.rand(3)
    torch.manual_seed(11)
    got = accumulated_contrastive_step(tiny_model, micro_batches, loss_fn)
    # the global RNG ends where one forward per micro-batch leaves it
    torch.testing.assert_close(torch.rand(3), after_reference)
    torch.testing.assert_close(got, want, **TOL)
    _assert_same_grads(_grads(tiny_model), _grads(reference))

    torch.manual_seed(12)  # dropout really changes the numbers: another seed, another loss
    with torch.no_grad():
        other = [reference(**mb) for mb in micro_batches]
        other_loss = loss_fn(
            torch.cat([o.audio_embeds for o in other]),
            torch.cat([o.text_embeds for o in other]),
            other[-1].logit_scale_exp,
        )
    assert abs(other_loss - want) > 1e-3


def test_batchnorm_statistics_update_once_per_micro_batch(tiny_model: Any) -> None:
    # training-mode batch norm normalises each micro-batch by its own statistics (like DDP
    # without SyncBatchNorm); the running statistics must move once per micro-batch, not twice
    tiny_model.train()
    reference = copy.deepcopy(tiny_model)
    micro_batches = _split(_batch(tiny_model), (3, 1, 4))
    loss_fn = ContrastiveLoss()
    torch.manual_seed(5)
    want = _full_step(reference, micro_batches, loss_fn)
    torch.manual_seed(5)
    got = accumulated_contrastive_step(tiny_model, micro_batches, loss_fn)

    torch.testing.assert_close(got, want, **TOL)
    _assert_same_grads(_grads(tiny_model), _grads(reference))
    norm, norm_ref = tiny_model.audio_encoder.norm, reference.audio_encoder.norm
    assert int(norm.num_batches_tracked) == 3
    torch.testing.assert_close(norm.running_mean, norm_ref.running_mean, **TOL)
    torch.testing.assert_close(norm.running_var, norm_ref.running_var, **TOL)


def test_naive_per_micro_batch_loss_does_not_match(tiny_model: Any) -> None:
    # today's accumulation (each micro-batch against its own negatives, loss / k) is a
    # different gradient: the tests above can fail
    reference = copy.deepcopy(tiny_model)
    batch = _batch(tiny_model)
    loss_fn = ContrastiveLoss()
    loss_fn(**vars(reference(**batch))).backward()
    micro_batches = _split(batch, (2, 2, 2, 2))
    naive = 0.0
    for mb in micro_batches:
        loss = loss_fn(**vars(tiny_model(**mb))) / len(micro_batches)
        loss.backward()
        naive += float(loss.detach())
    with torch.no_grad():
        whole = float(loss_fn(**vars(reference(**batch))))
    assert abs(naive - whole) > 0.1
    got, want = _grads(tiny_model), _grads(reference)
    gaps = [float((got[n] - w).abs().max()) for n, w in want.items() if w is not None]
    assert max(gaps) > 1e-2


def test_logit_scale_gradient_is_counted_once(tiny_model: Any) -> None:
    reference = copy.deepcopy(tiny_model)
    batch = _batch(tiny_model)
    loss_fn = ContrastiveLoss()
    loss_fn(**vars(reference(**batch))).backward()
    accumulated_contrastive_step(tiny_model, _split(batch, (2, 2, 2, 2)), loss_fn)
    want = reference.logit_scale.grad
    torch.testing.assert_close(tiny_model.logit_scale.grad, want, **TOL)
    assert not torch.allclose(tiny_model.logit_scale.grad, 4 * want)


class _NoisyPairs(nn.Module):
    """Adds noise drawn from a module-held generator, as clapkit.audio's SpecAugment can."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Linear(6, 4)
        self.text = nn.Linear(5, 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, audio: Tensor, text: Tensor) -> ClapOutput:
        noise = torch.randn(audio.shape, generator=self.generator)
        return ClapOutput(
            F.normalize(self.audio(audio + noise), dim=-1),
            F.normalize(self.text(text), dim=-1),
            self.logit_scale.exp(),
        )


def test_module_held_generator_is_restored() -> None:
    torch.manual_seed(0)
    model = _NoisyPairs()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    batch = {"audio": torch.randn(6, 6, generator=g), "text": torch.randn(6, 5, generator=g)}
    micro_batches = _split(batch, (2, 4))
    loss_fn = ContrastiveLoss()
    want = _full_step(reference, micro_batches, loss_fn)
    got = accumulated_contrastive_step(model, micro_batches, loss_fn)
    torch.testing.assert_close(got, want, **TOL)
    _assert_same_grads(_grads(model), _grads(reference))
    torch.testing.assert_close(model.generator.get_state(), reference.generator.get_state())


def test_backward_hook_and_no_sync_wrap_all_but_the_last(tiny_model: Any) -> None:
    events: list[str] = []

    @contextlib.contextmanager
    def no_sync() -> Iterator[None]:
        events.append("enter")
        yield
        events.append("exit")

    def backward(loss: Tensor) -> None:
        events.append("backward")
        loss.backward()

    micro_batches = _split(_batch(tiny_model), (3, 1, 4))
    accumulated_contrastive_step(
        tiny_model, micro_batches, ContrastiveLoss(), backward=backward, no_sync=no_sync
    )
    assert events == ["enter", "backward", "exit"] * 2 + ["backward"]


def test_rejects_empty_input_and_foreign_outputs(tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="at least one micro-batch"):
        accumulated_contrastive_step(tiny_model, [], ContrastiveLoss())
    micro_batches = _split(_batch(tiny_model), (4, 4))

    def as_tuple(**kwargs: Any) -> tuple[Tensor, ...]:
        return tuple(vars(tiny_model(**kwargs)).values())

    with pytest.raises(TypeError, match=r"must return a ClapOutput.*got tuple"):
        accumulated_contrastive_step(as_tuple, micro_batches, ContrastiveLoss())


def test_split_micro_batches() -> None:
    batch = {"waveform": torch.arange(10).reshape(5, 2), "texts": list("abcde"), "flag": True}
    parts = split_micro_batches(batch, 3)
    assert [p["texts"] for p in parts] == [["a"], ["b", "c"], ["d", "e"]]
    assert [p["waveform"][:, 0].tolist() for p in parts] == [[0], [2, 4], [6, 8]]
    assert all(p["flag"] is True for p in parts)
    with pytest.raises(ValueError, match="between 1 and the batch size 5, got 6"):
        split_micro_batches(batch, 6)
    with pytest.raises(ValueError, match="share their first dimension"):
        split_micro_batches({"a": torch.zeros(3), "b": [1, 2]}, 2)
