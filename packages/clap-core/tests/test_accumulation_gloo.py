"""accumulated_contrastive_step in two real gloo processes under DDP against one process."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from clapkit.core import ClapOutput, ContrastiveLoss, accumulated_contrastive_step

TOL = {"atol": 1e-5, "rtol": 1e-5}
WORLD_SIZE = 2
# (name, local_loss, micro-batch sizes per rank; batch norm needs 2 rows): the ranks hold
# different numbers of rows in "global"; the local loss equals the global one only when every
# rank holds as many rows
CASES = [("global", False, ((3, 2), (2, 4))), ("local", True, ((2, 3), (3, 2)))]
SEED = 100  # rank r seeds its RNG with SEED + r before its step


class _PairModel(nn.Module):
    """Tiny CLAP-shaped model with dropout on both sides and training-mode batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Sequential(
            nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 4)
        )
        self.embed = nn.Embedding(16, 8)
        self.text = nn.Sequential(nn.Dropout(0.3), nn.Linear(8, 4))
        self.logit_scale = nn.Parameter(torch.tensor(2.3))

    def forward(self, waveform: Tensor, input_ids: Tensor, attention_mask: Tensor) -> ClapOutput:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return ClapOutput(
            F.normalize(self.audio(waveform), dim=-1),
            F.normalize(self.text(pooled), dim=-1),
            self.logit_scale.exp(),
        )


def _model() -> _PairModel:
    torch.manual_seed(0)
    return _PairModel().train()


def _global_batch(rows: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(7)
    mask = torch.ones(rows, 5, dtype=torch.long)
    mask[::2, 3:] = 0  # some padded captions
    return {
        "waveform": torch.randn(rows, 6, generator=g),
        "input_ids": torch.randint(0, 16, (rows, 5), generator=g),
        "attention_mask": mask,
    }


def _micro_batches(sizes: tuple[tuple[int, ...], ...], rank: int) -> list[dict[str, Tensor]]:
    """Rank ``rank``'s micro-batches: its consecutive rows of the global batch, in order."""
    batch = _global_batch(sum(map(sum, sizes)))
    start = sum(map(sum, sizes[:rank]))
    parts = []
    for n in sizes[rank]:
        parts.append({k: v[start : start + n] for k, v in batch.items()})
        start += n
    return parts


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        for name, local_loss, sizes in CASES:
            model = nn.parallel.DistributedDataParallel(_model())
            torch.manual_seed(SEED + rank)
            loss = accumulated_contrastive_step(
                model,
                _micro_batches(sizes, rank),
                ContrastiveLoss(local_loss=local_loss),
                no_sync=model.no_sync,
            )
            grads = {n: p.grad.clone() for n, p in model.module.named_parameters()}
            torch.save({"loss": loss, "grads": grads}, Path(out_dir) / f"{name}_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _one_process(sizes: tuple[tuple[int, ...], ...]) -> tuple[Tensor, dict[str, Tensor]]:
    """One full step over both ranks' micro-batches, each rank's rows with that rank's RNG."""
    model = _model()
    outs = []
    for rank in range(WORLD_SIZE):
        torch.manual_seed(SEED + rank)
        outs.extend(model(**mb) for mb in _micro_batches(sizes, rank))
    loss = ContrastiveLoss()(
        torch.cat([o.audio_embeds for o in outs]),
        torch.cat([o.text_embeds for o in outs]),
        outs[0].logit_scale_exp,
    )
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_ddp_averaged_gradients_equal_one_process_full_batch(tmp_path: Path) -> None:
    mp.spawn(
        _worker,
        args=(WORLD_SIZE, str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    for name, local_loss, sizes in CASES:
        ref_loss, ref_grads = _one_process(sizes)
        results = [
            torch.load(tmp_path / f"{name}_{r}.pt", weights_only=True) for r in range(WORLD_SIZE)
        ]
        losses = torch.stack([r["loss"] for r in results])
        if local_loss:  # each rank's rows' share; their mean is the global loss
            torch.testing.assert_close(losses.mean(), ref_loss, **TOL)
        else:
            for loss in losses:
                torch.testing.assert_close(loss, ref_loss, **TOL)
        assert ref_grads["logit_scale"].abs() > 1e-4
        for result in results:
            assert result["grads"].keys() == ref_grads.keys()
            for key, grad in ref_grads.items():
                torch.testing.assert_close(result["grads"][key], grad, **TOL, msg=f"{name} {key}")
