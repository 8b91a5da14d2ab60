"""Throughput figures for the training log: samples/s, data wait vs compute, achieved TFLOP/s.

::

    flops = count_flops(lambda: loss_of(model, batch).backward(), model) / len(batch)
    meter = ThroughputMeter(flops_per_sample=flops)
    meter.start()
    for batch in loader:
        meter.batch_arrived()                    # the time since the last step was data wait
        ...forward, backward, step...
        stats = meter.step_done(samples=global_batch)   # at each optimizer update
    epoch_stats = meter.summary()                # and meter.reset() for the next epoch
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["StepStats", "ThroughputMeter", "count_flops"]


def count_flops(run: Callable[[], Any], model: Any = None) -> int:
    """FLOPs of one call of ``run`` (e.g. a forward and backward), by FlopCounterMode.

    The model's state is left as it was: the random generators are forked (dropout draws),
    buffers (BatchNorm running statistics) restored and gradients cleared, so counting does not
    change the training run that follows.

    Args:
        run: the work to count.
        model: the ``torch.nn.Module`` that ``run`` touches (its buffers and grads are restored).

    Returns:
        The total FLOPs counted (matrix products and convolutions).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    buffers = {}
    if model is not None:
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        counter = FlopCounterMode(display=False)
        with counter:
            run()
    if model is not None:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
        for parameter in model.parameters():
            parameter.grad = None
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class StepStats:
    """One optimizer step or an average over steps.

    Attributes:
        samples_per_s: samples of the step(s) over their wall time.
        data_wait_s: seconds per step spent waiting for the data loader.
        compute_s: seconds per step spent computing (forward, backward, optimizer).
        tflops: achieved TFLOP/s (0 when the FLOPs per sample are unknown).
    """

    samples_per_s: float
    data_wait_s: float
    compute_s: float
    tflops: float

    def as_dict(self) -> dict[str, float]:
        """The figures under their log names."""
        return {
            "samples_per_s": self.samples_per_s,
            "data_wait_s": self.data_wait_s,
            "compute_s": self.compute_s,
            "tflops": self.tflops,
        }


class ThroughputMeter:
    """Splits wall time into data wait and compute, per optimizer step and per epoch.

    Args:
        flops_per_sample: forward + backward FLOPs of one sample (for TFLOP/s); 0 = unknown.
        clock: the time source (seconds); ``time.perf_counter`` by default.
    """

    def __init__(
        self, flops_per_sample: float = 0.0, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.flops_per_sample = flops_per_sample
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget the totals (start of an epoch)."""
        self.steps = 0
        self.samples = 0
        self.wait_total = 0.0
        self.compute_total = 0.0
        self._step_wait = 0.0
        self._step_compute = 0.0
        self._mark: float | None = None
        self._arrived: float | None = None

    def start(self) -> None:
        """Start the clock (just before asking the loader for the first batch)."""
        self._mark = self.clock()

    def batch_arrived(self) -> None:
        """A micro-batch came out of the loader: the time since the last mark was data wait."""
        now = self.clock()
        if self._mark is None:
            self._mark = now
        self._step_wait += now - self._mark
        self._arrived = self._mark = now  # several arrivals in a row (grouped micro-batches)

    def micro_step_done(self) -> None:
        """The micro-batch's compute ended (for accumulation steps that do not update)."""
        now = self.clock()
        if self._arrived is not None:
            self._step_compute += now - self._arrived
        self._arrived = None
        self._mark = now

    def step_done(self, samples: int) -> StepStats:
        """An optimizer update ended; ``samples`` clips (over all processes) went into it.

        Args:
            samples: the global batch of this update.

        Returns:
            This step's figures.
        """
        self.micro_step_done()
        wait, compute = self._step_wait, self._step_compute
        self._step_wait = self._step_compute = 0.0
        self.steps += 1
        self.samples += samples
        self.wait_total += wait
        self.compute_total += compute
        return self._stats(samples, wait, compute, 1)

    def summary(self) -> StepStats:
        """Averages over the steps since :meth:`reset`."""
        return self._stats(self.samples, self.wait_total, self.compute_total, max(self.steps, 1))

    def _stats(self, samples: int, wait: float, compute: float, steps: int) -> StepStats:
        total = wait + compute
        rate = samples / total if total > 0 else 0.0
        return StepStats(
            samples_per_s=rate,
            data_wait_s=wait / steps,
            compute_s=compute / steps,
            tflops=rate * self.flops_per_sample / 1e12,
        )
