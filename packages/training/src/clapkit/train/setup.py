"""Accelerator, logging, seeding and gradient-checkpointing setup shared by the recipes.

::

    precision, source = resolve_precision("auto", launcher="bf16", bf16_device=True)
    accelerator = make_accelerator(out, mixed_precision=precision, log_with="tensorboard")
    setup_logging(accelerator)
    set_seed(cfg.seed)                              # accelerate.utils.set_seed
    enable_grad_checkpointing(model)                # --grad-checkpointing
    scheduler = linear_warmup(optimizer, cfg.warmup_steps)  # step it once per update
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clapkit.train.config import RunSettings
    from clapkit.train.runs import RunPlan

__all__ = [
    "PRECISION_ENV",
    "accumulation_steps",
    "enable_grad_checkpointing",
    "enable_tf32",
    "linear_warmup",
    "make_accelerator",
    "resolve_precision",
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


PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
"""What ``accelerate launch`` hands its processes: its ``--mixed_precision`` or its config
file's (``"no"`` when neither says)."""


def resolve_precision(
    requested: str, *, launcher: str | None, bf16_device: bool
) -> tuple[str, str]:
    """The run's precision: the recipe's flag, else the launcher's, else the preset default.

    ``accelerate launch`` always hands its processes a precision, ``"no"`` when neither its
    ``--mixed_precision`` nor its config file says one, so a launcher's ``"no"`` cannot be told
    from its default and counts as not said: force float32 with the recipe's
    ``--mixed-precision no``.

    Args:
        requested: the config's ``mixed_precision`` (``"auto"`` = not given).
        launcher: the launcher's value (``$ACCELERATE_MIXED_PRECISION``), or None.
        bf16_device: the device computes bf16 natively (an Ampere or later GPU).

    Returns:
        ``(precision, where it came from)``: ``"no"``, ``"bf16"`` or ``"fp16"``, and one of
        ``"recipe"``, ``"launcher"``, ``"default"``.

    Raises:
        SystemExit: an unknown value.
    """
    known = ("no", "bf16", "fp16")
    if requested != "auto":
        if requested not in known:
            raise SystemExit(f"--mixed-precision {requested!r}: choose auto, {', '.join(known)}")
        return requested, "recipe"
    if launcher and launcher != "no":
        if launcher not in known:
            raise SystemExit(f"the launcher's mixed precision {launcher!r} is not one of {known}")
        return launcher, "launcher"
    return ("bf16" if bf16_device else "no"), "default"


def enable_tf32(enable: bool) -> bool:
    """TensorFloat-32 for float32 matrix products and cuDNN convolutions on CUDA.

    Args:
        enable: the run's ``tf32`` setting.

    Returns:
        Whether TF32 is on (False without CUDA).
    """
    import torch

    on = enable and torch.cuda.is_available()
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return on


def make_accelerator(
    output_dir: str | Path,
    *,
    mixed_precision: str = "no",
    log_with: str | None = "tensorboard",
    pin_memory: bool | None = None,
) -> Any:
    """An ``Accelerator`` for a recipe run (no accumulation of its own: the recipe groups
    micro-batches into updates itself, ``TrainingRecipe.micro_steps``).

    Seedable samplers (so a resumed epoch replays the same order), TensorBoard logs under
    ``output_dir/logs``, the scheduler stepped by the recipe (per epoch), not per update, and
    batches copied to the GPU without blocking the host (from pinned memory).

    Args:
        output_dir: the run folder.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"``.
        log_with: a tracker name (``"tensorboard"``, ``"wandb"``), or ``None``/``"none"``.
        pin_memory: pin the loaders' batches (default: when CUDA is available).

    Returns:
        The accelerator.
    """
    import torch
    from accelerate import Accelerator  # type: ignore[import-untyped]
    from accelerate.utils import (  # type: ignore[import-untyped]
        DataLoaderConfiguration,
        ProjectConfiguration,
    )

    out = Path(output_dir)
    pinned = torch.cuda.is_available() if pin_memory is None else pin_memory
    return Accelerator(
        mixed_precision=mixed_precision,
        log_with=None if log_with in (None, "none") else log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=pinned),
        step_scheduler_with_optimizer=False,
    )


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
    cfg: RunSettings, *, ignore: Collection[str] = (), flush_denormal: bool = False
) -> tuple[Any, RunPlan]:
    """A recipe run's start: threads, the accelerator, logging, the run folder, the seed.

    The run folder is decided on every rank (``clapkit.train.runs.plan_run``, read-only), then
    changed by the main process alone while the others wait. The run's identity (``run.json``,
    compared on resume) is the config plus ``num_processes`` (another process count changes
    the data order and the accumulation).

    Args:
        cfg: the run's settings (a recipe's config).
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
    bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    precision, source = resolve_precision(
        cfg.mixed_precision, launcher=os.environ.get(PRECISION_ENV), bf16_device=bf16_gpu
    )
    accelerator = make_accelerator(out, mixed_precision=precision, log_with=cfg.log_with)
    setup_logging(accelerator)
    tf32 = enable_tf32(cfg.tf32)
    logging.getLogger(__name__).info(
        "precision %s (from the %s)%s", precision, source, ", TF32 on" if tf32 else ""
    )
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
