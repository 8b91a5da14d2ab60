"""Preemption: SIGTERM, SIGUSR1 or SIGINT finish the current update, save, and exit.

What a cluster sends before it takes the machines back (SLURM's ``--signal``, Kubernetes' and
spot VMs' SIGTERM) or what Ctrl-C sends makes a recipe stop cleanly: the update under way
finishes, every process agrees on the step to stop at (one small all-reduce of the signal at
each update boundary, on a CPU ``gloo`` group, so it never waits on the GPU), a checkpoint of
that step is written, and the processes exit with the signal's status:

==========  ======================================================================
SIGTERM     143 (128 + 15, what a shell reports for a run ended by SIGTERM)
SIGINT      130 (128 + 2, Ctrl-C)
SIGUSR1     ``--requeue-exit-code`` (default 75, ``EX_TEMPFAIL``: "try again"), for
            a batch script that requeues the job (SLURM ``--signal=USR1@120``)
==========  ======================================================================

A second signal exits at once (the same status, nothing saved). The same signal twice within
:data:`DUPLICATE_SECONDS` counts once: a scheduler and a launcher that forwards what it gets
(``torchrun``) may both deliver one signal.

In a recipe (``clapkit.train.recipe.TrainingRecipe`` does this)::

    preemption = Preemption(requeue_exit_code=75).install(out)   # every process, at the start
    ...  # after every optimizer update, on every process:
    stop_if_preempted(preemption, accelerator, save, step=step, run_folder=out)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "DUPLICATE_SECONDS",
    "EXIT_CODES",
    "PREEMPTED_FILE",
    "Preempted",
    "Preemption",
    "stop_if_preempted",
]

logger = logging.getLogger(__name__)

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}
"""Exit status per signal; SIGUSR1's is the configurable requeue status."""
DUPLICATE_SECONDS = 1.0
"""A repeat of the first signal within this time is the same request, not a second one."""
PREEMPTED_FILE = "PREEMPTED.json"
"""Written into the run folder by a preempted run (``{"signal", "step", "checkpoint",
"exit_code"}``) and removed when a run starts there: what a batch script checks to requeue."""


class Preempted(SystemExit):
    """The run stopped on a signal after saving its checkpoint; ``code`` is the exit status."""


class Preemption:
    """Signal handlers that turn the first SIGTERM/SIGUSR1/SIGINT into a request to stop at the
    next update boundary, and a second into an immediate exit.

    Args:
        requeue_exit_code: the exit status after SIGUSR1.
    """

    def __init__(self, *, requeue_exit_code: int = 75) -> None:
        self.codes = {**EXIT_CODES, signal.SIGUSR1: requeue_exit_code}
        self.signal: int = 0
        self.received_at = 0.0
        self.group: Any = None
        self.previous: dict[int, Any] = {}

    def install(self, run_folder: Path | None = None) -> Preemption:
        """Install the handlers (main thread; every process) and, with several processes on a
        non-gloo backend, the CPU group the agreement uses (a collective: every process).

        Args:
            run_folder: a run folder whose :data:`PREEMPTED_FILE` (a previous launch's) is
                removed: this launch goes on.

        Returns:
            self.
        """
        if run_folder is not None:
            (run_folder / PREEMPTED_FILE).unlink(missing_ok=True)
        for number in self.codes:
            self.previous[number] = signal.signal(number, self._handle)
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        if distributed and dist.get_world_size() > 1 and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo")  # the agreement never waits on a GPU
        return self

    def uninstall(self) -> None:
        """Put back the handlers that :meth:`install` replaced (a no-op if not installed)."""
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        now = time.monotonic()
        if not self.signal:
            self.signal, self.received_at = number, now
            logger.warning(
                "%s received: the run stops after this update, once its checkpoint is written "
                "(send it again to stop at once, without saving)",
                name,
            )
        elif number != self.signal or now - self.received_at >= DUPLICATE_SECONDS:
            code = self.codes[signal.Signals(self.signal)]
            print(f"{name} received again: stopping at once (exit status {code})",
                  file=sys.stderr, flush=True)  # fmt: skip
            os._exit(code)

    def agreed(self, processes: int) -> int:
        """The signal every process stops for: the largest number received by any of them
        (a collective when ``processes`` > 1: call on every process at the same point).

        Args:
            processes: the run's process count.

        Returns:
            The signal number, or 0 when no process received one.
        """
        if processes == 1:
            return self.signal
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.signal], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag.item())

    def exit_code(self, number: int) -> int:
        """The exit status for signal ``number``."""
        return self.codes[signal.Signals(number)]


def stop_if_preempted(
    preemption: Preemption,
    accelerator: Any,
    save: Callable[[], Path],
    *,
    step: int,
    run_folder: Path,
) -> None:
    """At an update boundary: when any process has received a signal, call ``save`` (every
    process), record :data:`PREEMPTED_FILE` in ``run_folder`` and raise :class:`Preempted`
    with the signal's exit status.

    Args:
        preemption: the installed handlers.
        accelerator: the run's accelerator.
        save: writes the checkpoint of this step (a no-op if it was just written); returns it.
        step: the optimizer step.
        run_folder: the run folder.

    Raises:
        Preempted: a process received SIGTERM, SIGINT or SIGUSR1.
    """
    number = preemption.agreed(accelerator.num_processes)
    if not number:
        return
    folder = save()
    code = preemption.exit_code(number)
    if accelerator.is_main_process:
        name = signal.Signals(number).name
        record = {"signal": name, "step": step, "checkpoint": str(folder), "exit_code": code}
        (run_folder / PREEMPTED_FILE).write_text(json.dumps(record, indent=1))
    logger.warning("stopped by %s after saving %s; exit status %d (go on with --resume latest)",
                   signal.Signals(number).name, folder, code)  # fmt: skip
    raise Preempted(code)
