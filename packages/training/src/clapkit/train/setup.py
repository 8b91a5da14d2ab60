"""Accelerator, logging, seeding and gradient-checkpointing setup shared by the recipes.

::

    accelerator = make_accelerator(out, mixed_precision="bf16", log_with="tensorboard",
                                   global_batch_size=1536, batch_size=64)
    setup_logging(accelerator)
    set_seed(cfg.seed)                              # accelerate.utils.set_seed
    enable_grad_checkpointing(model)                # --grad-checkpointing
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)  # step it once per update
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = [
    "accumulation_steps",
    "enable_grad_checkpointing",
    "linear_warmup",
    "make_accelerator",
    "setup_logging",
    "start_run",
]


def linear_warmup(optimizer: Any, steps: int) -> Any:
    """A learning rate rising linearly to the optimiser's own over ``steps`` updates, then
    constant: ``lr x min(1, (update + 1) / steps)``; ``steps`` 0 keeps it constant.

    Step it once per optimizer update, not per process (it is not for ``accelerator.prepare``,
    which would step it once per process); register it for checkpointing.

    Args:
        optimizer: the run's optimiser.
        steps: warm-up updates.

    Returns:
        The ``torch.optim.lr_scheduler.LambdaLR``.
    """
    import torch

    def factor(update: int) -> float:
        return min(1.0, (update + 1) / steps) if steps else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def accumulation_steps(global_batch_size: int, batch_size: int, num_processes: int) -> int:
    """Micro-steps per optimizer update so that one update sees ``global_batch_size`` clips.

    Args:
        global_batch_size: clips per optimizer update over all processes.
        batch_size: clips per process and micro-step.
        num_processes: the number of processes.

    Returns:
        ``global_batch_size // (batch_size * num_processes)``.

    Raises:
        SystemExit: the global batch is not a positive multiple of ``batch_size * processes``.
    """
    per_update = batch_size * num_processes
    if batch_size < 1 or global_batch_size < per_update or global_batch_size % per_update:
        raise SystemExit(
            f"global batch {global_batch_size} is not a multiple of "
            f"batch_size x processes = {batch_size} x {num_processes} = {per_update}"
        )
    return global_batch_size // per_update


def make_accelerator(
    output_dir: str | Path,
    *,
    mixed_precision: str = "no",
    log_with: str | None = "tensorboard",
    global_batch_size: int,
    batch_size: int,
) -> Any:
    """An ``Accelerator`` for a recipe run, with accumulation set to reach the global batch.

    Seedable samplers (so a resumed epoch replays the same order), TensorBoard logs under
    ``output_dir/logs``, and the scheduler stepped by the recipe (per epoch), not per update.

    Args:
        output_dir: the run folder.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"``.
        log_with: a tracker name (``"tensorboard"``, ``"wandb"``), or ``None``/``"none"``.
        global_batch_size: clips per optimizer update over all processes.
        batch_size: clips per process and micro-step.

    Returns:
        The accelerator; ``gradient_accumulation_steps`` is set.

    Raises:
        SystemExit: see :func:`accumulation_steps`.
    """
    from accelerate import Accelerator  # type: ignore[import-untyped]
    from accelerate.utils import (  # type: ignore[import-untyped]
        DataLoaderConfiguration,
        ProjectConfiguration,
    )

    out = Path(output_dir)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with=None if log_with in (None, "none") else log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
    )
    accelerator.gradient_accumulation_steps = accumulation_steps(
        global_batch_size, batch_size, accelerator.num_processes
    )
    return accelerator


def setup_logging(accelerator: Any, level: int = logging.INFO) -> None:
    """INFO logs on the main process, errors only elsewhere; accelerate's own at WARNING.

    Args:
        accelerator: the run's accelerator.
        level: the main process's level.
    """
    logging.basicConfig(
        level=level if accelerator.is_main_process else logging.ERROR,
        format="%(asctime)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def enable_grad_checkpointing(model: Any) -> list[str]:
    """Switch on gradient checkpointing in every submodule that supports it.

    Encoders follow timm's interface (``set_grad_checkpointing(enable)``); Hugging Face models
    answer ``gradient_checkpointing_enable()``.

    Args:
        model: e.g. a ``ClapModel`` (its ``audio_encoder`` and ``text_encoder``).

    Returns:
        The names of the submodules switched on (empty: nothing supports it).
    """
    switched: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(s + ".") for s in switched):
            continue  # a parent already covers it
        if hasattr(module, "set_grad_checkpointing") and module is not model:
            module.set_grad_checkpointing(True)
            switched.append(name)
        elif hasattr(module, "gradient_checkpointing_enable") and module is not model:
            module.gradient_checkpointing_enable()
            switched.append(name)
    return switched


def start_run(
    cfg: Any, *, ignore: Collection[str] = (), flush_denormal: bool = False
) -> tuple[Any, Any]:
    """A recipe run's start: threads, the accelerator, logging, the run folder, the seed.

    The run folder is decided on every rank (``clapkit.train.runs.plan_run``, read-only), then
    changed by the main process alone while the others wait. The run's identity (``run.json``,
    compared on resume) is the config plus ``num_processes`` (another process count changes
    the data order and the accumulation).

    Args:
        cfg: a recipe config with ``output_dir``, ``torch_threads``, ``mixed_precision``,
            ``log_with``, ``global_batch_size``, ``batch_size``, ``seed``, ``resume``,
            ``overwrite`` and ``resume_force``.
        ignore: fields that may change when the run is resumed.
        flush_denormal: ``torch.set_flush_denormal(True)`` (near-silent padding makes denormals
            that slow CPU kernels).

    Returns:
        ``(accelerator, plan)``: the plan's ``resume_from`` and ``run_json`` are the recipe's.
    """
    import torch
    from accelerate.utils import set_seed

    from clapkit.train.runs import plan_run

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    if flush_denormal:
        torch.set_flush_denormal(True)
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(
        out,
        mixed_precision=cfg.mixed_precision,
        log_with=cfg.log_with,
        global_batch_size=cfg.global_batch_size,
        batch_size=cfg.batch_size,
    )
    setup_logging(accelerator)
    identity = {**dataclasses.asdict(cfg), "num_processes": accelerator.num_processes}
    plan = plan_run(
        out,
        identity,
        seed=cfg.seed,
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        force=cfg.resume_force,
        ignore=ignore,
    )
    accelerator.wait_for_everyone()  # every rank has read the folder before it changes
    if accelerator.is_main_process:
        plan.apply()
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)
    return accelerator, plan
