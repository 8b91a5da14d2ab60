"""Atomic checkpoints: written aside, renamed into place when complete, verified on resume.

A checkpoint folder ``checkpoints/NAME`` is first written as ``checkpoints/.NAME.partial``
(``accelerator.save_state`` plus the recipe's own files), then closed with a completion marker
(``COMPLETE``: the size of every file in it) and renamed into place. A folder without the marker
was interrupted; one whose files do not match their recorded sizes, or whose safetensors cannot
be read, is corrupt. :func:`find_checkpoint` picks the newest complete one and says which it
passed over.

Typical use in a recipe::

    save_checkpoint(accelerator, out / "checkpoints" / "step_00000100",
                    files={"run.json": run_json_text})
    chosen = find_checkpoint(out / "checkpoints")      # --resume latest
    verify_checkpoint(Path(user_dir))                  # --resume DIR: the error names the file
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COMPLETE_MARKER",
    "CheckpointError",
    "Progress",
    "find_checkpoint",
    "full_state_dict",
    "replace_folder",
    "save_checkpoint",
    "save_whole_pretrained",
    "verify_checkpoint",
    "written_aside",
]

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
"""File name of the completion marker: JSON ``{"files": {name: bytes}, "saved": unix time}``."""
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".", ".partial"
SLOW_SAVE_ENV = "CLAPKIT_TRAIN_TEST_SAVE_DELAY"
"""Test-only hook: seconds to sleep between writing a checkpoint's files and its marker, so that
a test can kill the process in the middle of a save."""


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or corrupt; the message names the folder and the file."""


def _partial(folder: Path) -> Path:
    return folder.parent / f"{PARTIAL_PREFIX}{folder.name}{PARTIAL_SUFFIX}"


def _fsync_tree(folder: Path) -> None:
    # rename is atomic, but without fsync a power cut can leave renamed-but-empty files
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _write_marker(folder: Path) -> None:
    files = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    marker = folder / COMPLETE_MARKER
    marker.write_text(json.dumps({"files": files, "saved": time.time()}, indent=1))
    _fsync_tree(folder)


def replace_folder(staged: Path, final: Path) -> None:
    """Put a fully written folder in place of ``final`` (which may exist).

    POSIX cannot swap two folders in one step, so the old folder is first renamed to
    ``final.old`` and removed only after ``staged`` has become ``final``: at every instant one
    complete copy exists under one of the two names.

    Args:
        staged: the complete new folder (same file system as ``final``).
        final: where it goes.
    """
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staged.rename(final)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def written_aside(final: str | Path) -> Iterator[Path]:
    """A folder to write in place of ``final``: the block writes ``.NAME.partial`` beside it
    (emptied first: a killed write may have left one; created by the block), which replaces
    ``final`` by :func:`replace_folder` when the block ends without an error::

        with written_aside(out / "best") as staged:
            model.save_pretrained(staged)

    Args:
        final: the folder to replace (it may not exist yet).

    Yields:
        The staging folder, which does not exist yet.
    """
    final = Path(final)
    staged = _partial(final)
    if staged.exists():
        shutil.rmtree(staged)
    final.parent.mkdir(parents=True, exist_ok=True)
    yield staged
    replace_folder(staged, final)


def save_checkpoint(
    accelerator: Any,
    folder: str | Path,
    *,
    files: Mapping[str, str | bytes] | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """``accelerator.save_state`` into ``folder``, atomically (call it on every process).

    Args:
        accelerator: the run's ``accelerate.Accelerator``.
        folder: the checkpoint's final path, e.g. ``out / "checkpoints" / "step_00000100"``.
            Names must sort in save order (zero-padded steps): :func:`find_checkpoint` sorts them.
        files: extra files (name -> text or bytes) written by the main process beside the state,
            e.g. ``{"run.json": ..., "config.json": ...}``.
        write_extra: called by the main process with the staging folder to write more files.

    Returns:
        The final folder.
    """
    final = Path(folder)
    staged = _partial(final)
    if accelerator.is_main_process:
        final.parent.mkdir(parents=True, exist_ok=True)
        if staged.exists():  # left by a save that was killed
            shutil.rmtree(staged)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staged))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, content in (files or {}).items():
            path = staged / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        if write_extra is not None:
            write_extra(staged)
        delay = float(os.environ.get(SLOW_SAVE_ENV, "0") or 0)
        if delay:
            logger.warning("test hook %s: sleeping %.1f s before the marker", SLOW_SAVE_ENV, delay)
            time.sleep(delay)
        _write_marker(staged)
        replace_folder(staged, final)
    accelerator.wait_for_everyone()
    return final


def verify_checkpoint(folder: str | Path) -> Path:
    """Check that a checkpoint is complete and that its files are whole.

    Args:
        folder: a checkpoint folder written by :func:`save_checkpoint`.

    Returns:
        ``folder`` as a ``Path``.

    Raises:
        CheckpointError: no such folder, no completion marker (an interrupted save), a file
            missing or of another size than recorded, or a safetensors file that cannot be read.
            The message names the file.
    """
    path = Path(folder)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    marker = path / COMPLETE_MARKER
    if not marker.is_file():
        raise CheckpointError(
            f"checkpoint {path} is incomplete (no {COMPLETE_MARKER} marker: its save was "
            "interrupted)"
        )
    try:
        recorded: dict[str, int] = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {path}: unreadable marker {marker}: {error}") from error
    for name, size in recorded.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is corrupt: {file} is missing")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: {file} has {actual} bytes, {size} were written"
            )
        if file.suffix == ".safetensors":
            _check_safetensors(file, path)
    return path


def _check_safetensors(file: Path, checkpoint: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                handle.get_slice(key)
    except Exception as error:  # safetensors raises its own SafetensorError or OSError
        raise CheckpointError(f"checkpoint {checkpoint} is corrupt: {file}: {error}") from error


def find_checkpoint(checkpoints: str | Path) -> Path:
    """The newest complete checkpoint under ``checkpoints`` (what ``--resume latest`` means).

    Interrupted saves (staging folders, folders without a marker) and corrupt checkpoints are
    passed over with a warning that names them; the previous complete one is returned.

    Args:
        checkpoints: the folder holding the run's checkpoint folders.

    Returns:
        The chosen checkpoint folder.

    Raises:
        CheckpointError: no complete checkpoint; the message lists what was passed over and why.
    """
    root = Path(checkpoints)
    passed: list[str] = []
    staging = sorted(root.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}")) if root.is_dir() else []
    passed += [f"{p} (an interrupted save)" for p in staging]
    folders = [] if not root.is_dir() else [p for p in root.iterdir() if p.is_dir()]
    candidates = sorted(p for p in folders if p not in staging and not p.name.endswith(".old"))
    for folder in reversed(candidates):
        try:
            verify_checkpoint(folder)
        except CheckpointError as error:
            passed.append(str(error))
            continue
        for reason in passed:
            logger.warning("resume: passed over %s", reason)
        return folder
    detail = "".join(f"\n  - {reason}" for reason in passed)
    raise CheckpointError(f"no complete checkpoint under {root} to resume from{detail}")


@dataclass
class Progress:
    """Where a training run is; register it with ``accelerator.register_for_checkpointing`` so
    every checkpoint saves it and a resume continues mid-epoch exactly.

    Attributes:
        epoch: the current epoch.
        batches_in_epoch: batches of this epoch already consumed (skipped on resume).
        step: optimiser updates so far.
        loss_sum: running sum of this epoch's losses.
        loss_count: how many losses ``loss_sum`` holds.
        step_losses: this epoch's loss of each optimizer update, in order (the per-step
            trajectory a recipe writes into the epoch's record).
        history: one record per finished epoch.
        best: the best epoch's record, if any.
    """

    epoch: int = 0
    batches_in_epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    step_losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The fields as a dict (what accelerate pickles)."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the fields saved by `state_dict`."""
        for name, value in state.items():
            setattr(self, name, value)


def full_state_dict(accelerator: Any, model: Any) -> dict[str, Any] | None:
    """The model's whole state dict, gathered from its shards under FSDP (call on every rank).

    Under FSDP the parameters of the unwrapped model are shards (``DTensor``s); saving them
    would write this rank's pieces. ``accelerator.get_state_dict`` gathers them (a collective)
    into full CPU tensors on the main process.

    Args:
        accelerator: the run's accelerator.
        model: the prepared model.

    Returns:
        Under FSDP, the full state dict on the main process (None elsewhere); without FSDP,
        None: the unwrapped model's own weights are already whole.
    """
    from accelerate.utils import DistributedType  # type: ignore[import-untyped]

    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    state: dict[str, Any] = accelerator.get_state_dict(model)
    return state if accelerator.is_main_process else None


def save_whole_pretrained(
    model: Any, folder: Path, state: Mapping[str, Any] | None, *, tokenizer: Any
) -> None:
    """``model.save_pretrained(folder)``, or, under FSDP, a plain copy holding ``state``.

    A sharded model cannot save itself (its parameters are shards; safetensors fails on them),
    so on the main process a plain model is rebuilt from ``model.config`` (``type(model)(config,
    tokenizer=...)``, as ``from_pretrained`` does), loaded strictly with the gathered
    ``state`` and saved: the folder loads back into a plain ``ClapModel`` / ``ClapCaptioner``.

    Args:
        model: the unwrapped model (``ClapModel``, ``ClapCaptioner``).
        folder: where to save.
        state: :func:`full_state_dict`'s result (None: the model's own weights are whole).
        tokenizer: the model's tokenizer (for the rebuilt copy).
    """
    if state is None:
        model.save_pretrained(folder)
        return
    plain = type(model)(model.config, tokenizer=tokenizer)
    plain.load_state_dict(dict(state), strict=True)
    plain.save_pretrained(folder)
