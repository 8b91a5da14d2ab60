"""The generic step pieces: update groups, accumulation, device-side losses, precision, MFU."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from clapkit.train.setup import resolve_precision
from clapkit.train.steps import StepLosses, accumulate, optimizer_step, update_groups
from clapkit.train.throughput import PEAK_FLOPS, peak_flops


class OneProcess:
    """The accelerator calls the step pieces make, for one process without mixed precision."""

    def __init__(self) -> None:
        self.no_sync_calls = 0

    def no_sync(self, model: Any) -> Any:
        self.no_sync_calls += 1
        return torch.autograd.graph.saved_tensors_hooks(lambda x: x, lambda x: x)

    def autocast(self) -> Any:
        return torch.autocast("cpu", enabled=False)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, parameters: Any, norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(parameters, norm)

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        return tensor


def test_update_groups_keep_order_and_the_short_last_group() -> None:
    assert list(update_groups(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(update_groups(range(4), 1)) == [[0], [1], [2], [3]]
    assert list(update_groups([], 2)) == []
    with pytest.raises(ValueError, match="micro_steps must be >= 1"):
        list(update_groups(range(3), 0))


def test_accumulate_gives_the_mean_gradient_and_syncs_once() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    group = [(x[:4], y[:4]), (x[4:], y[4:])]
    whole = torch.nn.functional.mse_loss(model(x), y)
    (expected,) = torch.autograd.grad(whole, model.weight)
    accelerator = OneProcess()

    def loss_step(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    loss = accumulate(accelerator, model, group, loss_step)
    assert model.weight.grad is not None
    torch.testing.assert_close(model.weight.grad, expected)
    torch.testing.assert_close(loss, whole.detach())
    assert accelerator.no_sync_calls == 1  # all but the last micro-batch
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    optimizer_step(accelerator, model, optimizer, max_grad_norm=1e-3)
    assert model.weight.grad is None  # dropped, not zeroed
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.1 * 1e-3, rel=1e-3)  # clipped


def test_step_losses_read_a_window_once() -> None:
    losses = StepLosses()
    assert losses.read(OneProcess()) is None
    for step, value in ((11, 2.0), (12, float("nan")), (13, 1.0)):
        losses.add(step, torch.tensor(value))
    window = losses.read(OneProcess())
    assert window is not None
    assert (window.first_step, window.last_step, window.first_bad_step) == (11, 13, 12)
    assert window.losses[0] == 2.0
    assert math.isnan(window.losses[1])
    assert window.bad_processes == 1
    assert len(losses) == 0
    losses.add(14, torch.tensor(0.5))
    window = losses.read(OneProcess())
    assert window is not None
    assert (window.first_step, window.bad_processes) == (14, 0)


@pytest.mark.parametrize(
    ("requested", "launcher", "bf16_device", "expected"),
    [
        ("no", "bf16", True, ("no", "recipe")),  # the recipe's flag wins
        ("bf16", None, False, ("bf16", "recipe")),
        ("auto", "bf16", False, ("bf16", "launcher")),  # accelerate launch --mixed_precision
        ("auto", "fp16", True, ("fp16", "launcher")),
        ("auto", "no", True, ("bf16", "default")),  # the launcher's 'no' is its default
        ("auto", None, True, ("bf16", "default")),  # a GPU with bf16
        ("auto", None, False, ("no", "default")),  # a CPU
    ],
)
def test_precision_resolves_flag_then_launcher_then_default(
    requested: str, launcher: str | None, bf16_device: bool, expected: tuple[str, str]
) -> None:
    assert resolve_precision(requested, launcher=launcher, bf16_device=bf16_device) == expected


def test_precision_rejects_unknown_values() -> None:
    with pytest.raises(SystemExit, match="'fp8'"):
        resolve_precision("fp8", launcher=None, bf16_device=False)
    with pytest.raises(SystemExit, match="the launcher's mixed precision 'fp8'"):
        resolve_precision("auto", launcher="fp8", bf16_device=False)


def test_peak_flops_by_device_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert peak_flops("cpu", "bf16") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, gpu in (
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, n=name: n)
        assert peak_flops("cuda:0", "bf16") == PEAK_FLOPS[gpu]["bf16"]
        assert peak_flops("cuda:0", "no", tf32=True) == PEAK_FLOPS[gpu]["tf32"]
        assert peak_flops("cuda:0", "no") == PEAK_FLOPS[gpu]["fp32"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA GeForce RTX 4090")
    assert peak_flops("cuda:0", "bf16") is None
    assert PEAK_FLOPS["H100"]["bf16"] == 989e12  # dense: half the datasheet's sparse 1979
