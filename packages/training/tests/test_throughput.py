"""Throughput: the data wait / compute split and the FLOP count."""

from __future__ import annotations

import pytest
import torch

from clapkit.train.throughput import ThroughputMeter, count_flops


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_splits_wait_and_compute() -> None:
    clock = FakeClock()
    meter = ThroughputMeter(flops_per_sample=1e12, clock=clock)
    meter.start()
    for wait, compute in ((0.5, 1.0), (0.1, 0.4)):  # two micro-steps make one update
        clock.now += wait
        meter.batch_arrived()
        clock.now += compute
        if wait == 0.5:
            meter.micro_step_done()
    stats = meter.step_done(samples=20)
    assert stats.data_wait_s == pytest.approx(0.6)
    assert stats.compute_s == pytest.approx(1.4)
    assert stats.samples_per_s == pytest.approx(10.0)
    assert stats.tflops == pytest.approx(10.0)
    clock.now += 3.0  # e.g. a checkpoint save, excluded by a new start()
    meter.start()
    clock.now += 1.0
    meter.batch_arrived()
    clock.now += 1.0
    meter.step_done(samples=20)
    summary = meter.summary()
    assert summary.samples_per_s == pytest.approx(40 / 4.0)
    assert summary.data_wait_s == pytest.approx(1.6 / 2)
    assert summary.compute_s == pytest.approx(2.4 / 2)
    assert set(summary.as_dict()) == {"samples_per_s", "data_wait_s", "compute_s", "tflops"}
    meter.reset()
    assert meter.summary().samples_per_s == 0.0


def test_count_flops_of_a_linear_and_no_side_effects() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.5)
    )
    x = torch.randn(4, 8)
    running = model[1].running_mean.clone()
    before = torch.random.get_rng_state()

    def step() -> None:
        model(x).sum().backward()

    flops = count_flops(step, model)
    # forward 2*b*in*out; backward: the weight's gradient, 2*b*in*out (x needs no gradient)
    assert flops == 2 * (2 * 4 * 8 * 16)
    assert torch.equal(torch.random.get_rng_state(), before)  # dropout's draws were forked
    assert torch.equal(model[1].running_mean, running)  # BatchNorm statistics restored
    assert all(p.grad is None for p in model.parameters())


def test_windows_count_flops_per_device_and_mfu() -> None:
    clock = FakeClock()
    meter = ThroughputMeter(flops_per_sample=1e12, clock=clock, peak_flops=20e12)
    meter.start()
    for flops in (None, 30e12):  # the second update counted at its own caption lengths
        clock.now += 0.5
        meter.batch_arrived()
        clock.now += 1.5
        meter.step_done(samples=10, flops=flops)
    first = meter.take_window()
    assert first.samples_per_s == pytest.approx(20 / 4.0)
    assert first.tflops == pytest.approx(40 / 4.0)
    assert first.mfu == pytest.approx(10 / 20)
    clock.now += 1.0
    meter.batch_arrived()
    clock.now += 1.0
    meter.step_done(samples=4)
    second = meter.take_window()
    assert (second.samples_per_s, second.tflops) == (pytest.approx(2.0), pytest.approx(2.0))
    assert meter.summary().samples_per_s == pytest.approx(24 / 6.0)
    assert "mfu" not in ThroughputMeter(1.0, clock=clock).summary().as_dict()
