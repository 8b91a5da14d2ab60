"""Throughput figures for the training log, per device: samples/s, data wait vs compute,
achieved TFLOP/s and model FLOPs utilisation (MFU) against the device's peak.

::

    flops = count_flops(lambda: loss_of(model, batch).backward(), model) / len(batch)
    meter = ThroughputMeter(flops_per_sample=flops, peak_flops=peak_flops(device, "bf16"))
    meter.start()
    for group in update_groups(meter.timed(loader), micro_steps):  # arrivals = data wait
        ...forward, backward, step...
        meter.step_done(samples=local_batch)     # this process's clips of the update
        if step % log_every == 0:
            log(meter.take_window().as_dict())   # the steps since the last window
    epoch_stats = meter.summary()                # and meter.reset() for the next epoch

The times are the host's: between two log steps a GPU may still be running what the host
queued, so one step's split is approximate, while a window that ends with a log step (which
reads the losses back and so waits for the device) is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["PEAK_FLOPS", "StepStats", "ThroughputMeter", "count_flops", "peak_flops"]

PEAK_FLOPS: dict[str, dict[str, float]] = {
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "H100 PCIe": {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    "H200": {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
}
"""Dense peak FLOP/s by GPU and math mode, from NVIDIA's datasheets (the A100 Tensor Core GPU
datasheet; the H100 datasheet, SXM and PCIe columns; the H200 datasheet, whose compute is the
H100 SXM's). The H100 and H200 sheets give bf16 and TF32 with 2:4 sparsity, dense is half of
that; fp32 is the plain (non-tensor-core) rate. ``H100`` is the SXM part (an NVL part is counted
as one); names are matched in the order of this table, PCIe first."""


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


def peak_flops(device: Any, precision: str, *, tf32: bool = False) -> float | None:
    """The device's dense peak FLOP/s for the run's math (for MFU), from :data:`PEAK_FLOPS`.

    Args:
        device: the training device (``torch.device`` or its string).
        precision: the run's mixed precision (``"bf16"``, ``"fp16"`` count as bf16, ``"no"``).
        tf32: float32 matrix products run as TF32.

    Returns:
        The peak, or None for a device the table does not know (a CPU, another GPU).
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    mode = "bf16" if precision in ("bf16", "fp16") else ("tf32" if tf32 else "fp32")
    for gpu, peaks in PEAK_FLOPS.items():
        if all(part in name for part in gpu.split()):
            return peaks[mode]
    return None


@dataclass(frozen=True)
class StepStats:
    """One optimizer step or an average over steps.

    Attributes:
        samples_per_s: this device's samples of the step(s) over their wall time.
        data_wait_s: seconds per step spent waiting for the data loader.
        compute_s: seconds per step spent computing (forward, backward, optimizer).
        tflops: this device's achieved TFLOP/s (0 when the FLOPs per sample are unknown).
        mfu: model FLOPs utilisation, achieved over the device's peak (None: peak unknown).
    """

    samples_per_s: float
    data_wait_s: float
    compute_s: float
    tflops: float
    mfu: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The figures under their log names (``mfu`` only where the peak is known)."""
        figures = {
            "samples_per_s": self.samples_per_s,
            "data_wait_s": self.data_wait_s,
            "compute_s": self.compute_s,
            "tflops": self.tflops,
        }
        if self.mfu is not None:
            figures["mfu"] = self.mfu
        return figures


class ThroughputMeter:
    """Splits wall time into data wait and compute, per optimizer step and per epoch.

    Args:
        flops_per_sample: forward + backward FLOPs of one sample (for TFLOP/s); 0 = unknown.
        clock: the time source (seconds); ``time.perf_counter`` by default.
        peak_flops: the device's peak FLOP/s (:func:`peak_flops`), for MFU; None = unknown.
    """

    def __init__(
        self,
        flops_per_sample: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
        peak_flops: float | None = None,
    ) -> None:
        self.flops_per_sample = flops_per_sample
        self.clock = clock
        self.peak_flops = peak_flops
        self.reset()

    def reset(self) -> None:
        """Forget the totals (start of an epoch)."""
        self.steps = 0
        self.samples = 0
        self.flops = 0.0
        self.wait_total = 0.0
        self.compute_total = 0.0
        self._step_wait = 0.0
        self._step_compute = 0.0
        self._mark: float | None = None
        self._arrived: float | None = None
        self._window = (0, 0, 0.0, 0.0, 0.0)  # steps, samples, flops, wait, compute

    def timed(self, batches: Iterable[T]) -> Iterator[T]:
        """``batches``, each marked as it arrives (:meth:`batch_arrived`)."""
        for batch in batches:
            self.batch_arrived()
            yield batch

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

    def step_done(self, samples: int, flops: float | None = None) -> StepStats:
        """An optimizer update ended; ``samples`` clips of this process went into it.

        Args:
            samples: this process's clips of the update (figures are per device).
            flops: the update's forward + backward FLOPs on this process (e.g. each batch's
                clips x the FLOPs per sample at its padded caption length); default
                ``samples x flops_per_sample``.

        Returns:
            This step's figures.
        """
        self.micro_step_done()
        wait, compute = self._step_wait, self._step_compute
        self._step_wait = self._step_compute = 0.0
        flops = samples * self.flops_per_sample if flops is None else flops
        self.steps += 1
        self.samples += samples
        self.flops += flops
        self.wait_total += wait
        self.compute_total += compute
        return self._stats(samples, flops, wait, compute, 1)

    def summary(self) -> StepStats:
        """Averages over the steps since :meth:`reset`."""
        return self._stats(
            self.samples, self.flops, self.wait_total, self.compute_total, max(self.steps, 1)
        )

    def take_window(self) -> StepStats:
        """Averages over the steps since the last window (or :meth:`reset`)."""
        steps, samples, flops, wait, compute = self._window
        self._window = (self.steps, self.samples, self.flops, self.wait_total, self.compute_total)
        return self._stats(
            self.samples - samples,
            self.flops - flops,
            self.wait_total - wait,
            self.compute_total - compute,
            max(self.steps - steps, 1),
        )

    def _stats(
        self, samples: int, flops: float, wait: float, compute: float, steps: int
    ) -> StepStats:
        total = wait + compute
        rate = samples / total if total > 0 else 0.0
        achieved = flops / total if total > 0 else 0.0
        return StepStats(
            samples_per_s=rate,
            data_wait_s=wait / steps,
            compute_s=compute / steps,
            tflops=achieved / 1e12,
            mfu=None if not self.peak_flops else achieved / self.peak_flops,
        )
