"""ContrastiveLoss: single-process maths and a real two-process gloo run against one process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from clapkit.core import ContrastiveLoss

GLOBAL_BATCH = 8
# (name, local_loss, rows held by rank 0, rows held by rank 1, pad_to)
CASES = [
    ("global", False, 4, 4, None),
    ("local", True, 4, 4, None),
    ("uneven", False, 5, 3, None),
    ("padded", False, 4, 4, 6),
    ("padded-local", True, 4, 4, 4),
    ("padded-uneven", False, 5, 3, 5),
    # rank 1 lost every clip: it sends one stand-in row marked invalid, asking nobody
    ("stand-in", False, 8, 0, 8),
]


class _TinyClap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Linear(6, 4)
        self.text = nn.Linear(5, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = F.normalize(self.audio(audio), dim=-1)
        t = F.normalize(self.text(text), dim=-1)
        return a, t, self.logit_scale.exp()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randn(GLOBAL_BATCH, 5, generator=g)


def _model() -> _TinyClap:
    torch.manual_seed(0)
    return _TinyClap()


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        audio, text = _data()
        for name, local_loss, rows0, _, pad_to in CASES:
            model = nn.parallel.DistributedDataParallel(_model())
            start, stop = (0, rows0) if rank == 0 else (rows0, GLOBAL_BATCH)
            valid = None if pad_to is None else torch.ones(stop - start, dtype=torch.bool)
            if start == stop:
                start, stop, valid = 0, 1, torch.zeros(1, dtype=torch.bool)
            a, t, scale = model(audio[start:stop], text[start:stop])
            loss = ContrastiveLoss(local_loss=local_loss, pad_to=pad_to)(a, t, scale, valid)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.module.named_parameters()}
            torch.save({"loss": loss.detach(), "grads": grads}, Path(out_dir) / f"{name}_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _single_process_reference() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = _model()
    a, t, scale = model(*_data())
    loss = ContrastiveLoss()(a, t, scale)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_matches_hand_written_symmetric_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 3, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 3, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * a @ t.T
    expected_a = -torch.log_softmax(logits, dim=1).diagonal().mean()
    expected_t = -torch.log_softmax(logits, dim=0).diagonal().mean()
    loss = ContrastiveLoss()(a, t, scale)
    torch.testing.assert_close(loss, 0.5 * (expected_a + expected_t))
    # single process: the local variant is the same loss
    torch.testing.assert_close(ContrastiveLoss(local_loss=True)(a, t, scale), loss)


def test_loss_drops_when_pairs_align() -> None:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    shuffled = a[torch.randperm(6, generator=g)]
    loss = ContrastiveLoss()
    scale = torch.tensor(20.0)
    assert loss(a, a, scale) < 0.05 < loss(a, shuffled, scale)


def test_padded_loss_leaves_invalid_rows_out() -> None:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 3, generator=g), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(6, 3, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    valid = torch.tensor([True, False, True, True, False, True])
    expected = ContrastiveLoss()(a[valid], t[valid], scale)
    for local_loss in (False, True):
        padded = ContrastiveLoss(local_loss=local_loss, pad_to=8)
        loss = padded(a, t, scale, valid)
        torch.testing.assert_close(loss, expected)
        (gradient,) = torch.autograd.grad(loss, a)
        assert gradient[~valid].abs().max() == 0
        assert gradient[valid].abs().max() > 0
    nothing = torch.zeros(6, dtype=torch.bool)
    assert ContrastiveLoss(pad_to=6)(a, t, scale, nothing) == 0
    with pytest.raises(ValueError, match="7 rows do not fit the gather's 6 rows"):
        ContrastiveLoss(pad_to=6)(torch.randn(7, 3), torch.randn(7, 3), scale)
    with pytest.raises(ValueError, match=r"valid rows need ContrastiveLoss\(pad_to=...\)"):
        ContrastiveLoss()(a, t, scale, valid)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        ContrastiveLoss()(torch.randn(4, 3), torch.randn(5, 3), torch.tensor(1.0))


def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    world_size = 2
    mp.spawn(
        _worker,
        args=(world_size, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    ref_loss, ref_grads = _single_process_reference()
    for name, local_loss, _, _, _ in CASES:
        results = [
            torch.load(tmp_path / f"{name}_{r}.pt", weights_only=True) for r in range(world_size)
        ]
        losses = torch.stack([r["loss"] for r in results])
        if local_loss:  # each rank holds its rows' share; their mean is the global loss
            torch.testing.assert_close(losses.mean(), ref_loss)
            assert not torch.allclose(losses[0], losses[1])
        else:
            for loss in losses:
                torch.testing.assert_close(loss, ref_loss)
        for result in results:  # DDP has averaged the gradients: identical on every rank
            assert result["grads"].keys() == ref_grads.keys()
            for key, grad in ref_grads.items():
                torch.testing.assert_close(result["grads"][key], grad, msg=f"{name}: {key}")
