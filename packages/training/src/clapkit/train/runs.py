"""Run folders that never mix: one training run per output folder, with its identity recorded.

A run starts only in an empty (or absent) output folder. ``--overwrite`` moves a previous run
aside to ``OUT.old-<timestamp>`` first; ``--resume latest|DIR`` continues a run, after checking
that the checkpoint was written by a run with the same config (``run.json``), unless
``--resume-force``. Every rank calls :func:`plan_run` (it only reads), then the main process
calls :meth:`RunPlan.apply`::

    plan = plan_run(out, resolved, resume=cfg.resume, overwrite=cfg.overwrite,
                    force=cfg.resume_force, seed=cfg.seed, ignore=RESUMABLE_CHANGES)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        plan.apply()
    accelerator.wait_for_everyone()
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clapkit.train.checkpointing import CheckpointError, find_checkpoint, verify_checkpoint
from clapkit.train.config import config_diff, config_hash, jsonable

__all__ = ["RUN_FILE", "RunError", "RunPlan", "plan_run", "read_run"]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
"""A run's identity: ``{"config_hash", "seed", "started", "config"}``."""


class RunError(SystemExit):
    """The output folder or the checkpoint does not allow this launch; the message says why.

    A ``SystemExit`` so that a command-line launch ends with the message and status 1, without
    a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class RunPlan:
    """What a launch will do with its output folder (decided by :func:`plan_run`).

    Attributes:
        out: the output folder.
        identity: the ``run.json`` content of this launch.
        resume_from: the checkpoint to load, or None for a fresh start.
        move_aside: where an old run is moved (``--overwrite``), or None.
        differences: config fields that differ from the checkpoint's run (``--resume-force``).
    """

    out: Path
    identity: dict[str, Any]
    resume_from: Path | None = None
    move_aside: Path | None = None
    differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def apply(self) -> None:
        """Main process only: move an old run aside, create the folder, write ``run.json``."""
        if self.move_aside is not None:
            self.out.rename(self.move_aside)
            logger.warning(
                "--overwrite: moved the previous run in %s to %s", self.out, self.move_aside
            )
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / RUN_FILE).write_text(json.dumps(self.identity, indent=2))

    @property
    def run_json(self) -> str:
        """``run.json`` as text (also stored in every checkpoint)."""
        return json.dumps(self.identity, indent=2)


def read_run(folder: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run or checkpoint folder.

    Args:
        folder: a run folder or a checkpoint folder.

    Returns:
        The identity mapping.

    Raises:
        RunError: no ``run.json`` in ``folder``.
    """
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        raise RunError(f"{path} does not exist: {folder} was not written by a clapkit recipe run")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def plan_run(
    out: str | Path,
    config: Mapping[str, Any],
    *,
    seed: int,
    resume: str | None = None,
    overwrite: bool = False,
    force: bool = False,
    ignore: Collection[str] = (),
    now: float | None = None,
) -> RunPlan:
    """Decide what to do with the output folder; reads only (safe on every rank).

    Args:
        out: the output folder.
        config: the resolved config as a mapping (``dataclasses.asdict``), recorded in
            ``run.json``.
        seed: the run's seed.
        resume: None (fresh run), ``"latest"`` (newest complete checkpoint under
            ``out/checkpoints``) or a checkpoint folder.
        overwrite: move a previous run in ``out`` aside instead of refusing to start.
        force: resume although the config differs from the checkpoint's run (the differences
            are logged).
        ignore: config fields that may change between a run and its resumption (output folder,
            logging, resume flags, stopping points); they are left out of the hash and the check.
        now: the start time (unix seconds); default: the current time.

    Returns:
        The plan; call :meth:`RunPlan.apply` on the main process.

    Raises:
        RunError: a non-empty folder without ``--resume``/``--overwrite``, both given, no
            checkpoint to resume, a corrupt checkpoint given by path, or a config that differs
            from the checkpoint's run (each differing field named) without ``force``.
    """
    out = Path(out)
    started = time.time() if now is None else now
    values = jsonable(config)
    identity = {
        "config_hash": config_hash(values, ignore),
        "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": values,
    }
    plan = RunPlan(out=out, identity=identity)
    if resume and overwrite:
        raise RunError(
            "--resume and --overwrite exclude each other: continue the run or replace it"
        )
    if resume is None:
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise RunError(
                    f"{out} already holds a run: continue it with --resume latest, replace it "
                    "with --overwrite (the old run is moved aside), or choose another --output-dir"
                )
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
            plan.move_aside = out.with_name(f"{out.name}.old-{stamp}")
            n = 1
            while plan.move_aside.exists():  # two replacements within one second
                n += 1
                plan.move_aside = out.with_name(f"{out.name}.old-{stamp}-{n}")
        return plan
    try:
        if resume == "latest":
            plan.resume_from = find_checkpoint(out / "checkpoints")
        else:
            plan.resume_from = verify_checkpoint(resume)
    except CheckpointError as error:
        raise RunError(f"cannot resume: {error}") from error
    previous = read_run(plan.resume_from)
    plan.differences = config_diff(previous.get("config", {}), values, ignore)
    if plan.differences:
        listing = "".join(
            f"\n  {name}: {old!r} in the checkpoint, {new!r} now"
            for name, (old, new) in plan.differences.items()
        )
        if not force:
            raise RunError(
                f"cannot resume from {plan.resume_from}: it belongs to a run with another config "
                f"(hash {previous.get('config_hash')} vs {identity['config_hash']}):{listing}\n"
                "relaunch with the same settings, or add --resume-force to continue anyway"
            )
        logger.warning("--resume-force: resuming despite config differences:%s", listing)
    # the continued run keeps its identity (first start, seed); the config may be forced
    identity["started"] = previous.get("started", identity["started"])
    identity["resumed"] = [*previous.get("resumed", []), str(plan.resume_from)]
    return plan
