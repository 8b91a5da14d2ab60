"""Atomic checkpoints: written aside, renamed into place when complete, verified on resume.

A checkpoint folder ``checkpoints/NAME`` is first written as ``checkpoints/.NAME.partial`` (the
training state as JSON and safetensors, ``clapkit.train.state``, plus the recipe's own files),
then closed with a completion marker (``COMPLETE``: the size and sha256 of every file in it)
and renamed into place. A folder without the marker was interrupted; one whose files do not
match their recorded sizes or hashes, or whose safetensors cannot be read, is corrupt:
:func:`find_checkpoint` picks the newest complete one and says which it passed over. A folder
holding a pickle is refused outright (:class:`UnsafeCheckpointError`): clapkit writes none, and
loading one could run code. A failed write (disk full, quota, read-only) removes the partial
folder and says where, how much was free and how to go on (:class:`CheckpointWriteError`).

Typical use in a recipe::

    save_checkpoint(accelerator, out / "checkpoints" / "step_00000100",
                    files={"run.json": run_json_text})
    chosen = find_checkpoint(out / "checkpoints")      # --resume latest
    verify_checkpoint(Path(user_dir))                  # --resume DIR: the error names the file
    load_checkpoint(accelerator, chosen, force=False)  # on every process
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clapkit.train.integrity import (
    COMPLETE_MARKER,
    CheckpointError,
    UnsafeCheckpointError,
    check_files,
    write_marker,
)
from clapkit.train.write_errors import CheckpointWriteError, write_failure

__all__ = [
    "COMPLETE_MARKER",
    "CheckpointError",
    "CheckpointWriteError",
    "Progress",
    "UnsafeCheckpointError",
    "find_checkpoint",
    "full_state_dict",
    "load_checkpoint",
    "replace_folder",
    "save_checkpoint",
    "save_whole_pretrained",
    "verify_checkpoint",
    "written_aside",
]

logger = logging.getLogger(__name__)

PARTIAL_PREFIX, PARTIAL_SUFFIX = ".", ".partial"


def _partial(folder: Path) -> Path:
    return folder.parent / f"{PARTIAL_PREFIX}{folder.name}{PARTIAL_SUFFIX}"


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
def written_aside(final: str | Path, *, what: str = "") -> Iterator[Path]:
    """A folder to write in place of ``final``: the block writes ``.NAME.partial`` beside it
    (emptied first: a killed write may have left one; created by the block), which replaces
    ``final`` by :func:`replace_folder` when the block ends without an error::

        with written_aside(out / "best") as staged:
            model.save_pretrained(staged)

    A block that fails leaves ``final`` as it was and the partial folder removed; a write error
    of the file system (disk full, quota, read-only) becomes a :class:`CheckpointWriteError`
    that names the folder and the free space.

    Args:
        final: the folder to replace (it may not exist yet).
        what: what the folder holds, for the error message (default: its name).

    Yields:
        The staging folder, which does not exist yet.

    Raises:
        CheckpointWriteError: the block or the swap failed to write.
    """
    final = Path(final)
    staged = _partial(final)
    if staged.exists():
        shutil.rmtree(staged)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staged
        replace_folder(staged, final)
    except Exception as error:
        shutil.rmtree(staged, ignore_errors=True)
        failure = write_failure(error, what or f"{final.name}/", final, kept=_kept(final))
        if failure is None:
            raise
        raise failure from error


def _kept(final: Path) -> str:
    if final.is_dir():
        return f"the previous {final} is intact"
    return f"nothing was kept in {final}"


def _newest_complete(root: Path) -> Path | None:
    done = sorted(p.parent for p in root.glob(f"*/{COMPLETE_MARKER}") if p.parent.is_dir())
    done = [p for p in done if not p.name.startswith(PARTIAL_PREFIX)]
    return done[-1] if done else None


def save_checkpoint(
    accelerator: Any,
    folder: str | Path,
    *,
    files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """The run's training state (``clapkit.train.state``) into ``folder``, atomically (call on
    every process).

    Args:
        accelerator: the run's ``accelerate.Accelerator``.
        folder: the checkpoint's final path, e.g. ``out / "checkpoints" / "step_00000100"``.
            Names must sort in save order (zero-padded steps): :func:`find_checkpoint` sorts them.
        files: extra files (name -> text or bytes) written by the main process beside the state,
            e.g. ``{"run.json": ..., "config.json": ...}``.

    Returns:
        The final folder.

    Raises:
        CheckpointWriteError: a write failed (disk full, quota, read-only file system): the
            partial folder is removed, the previous checkpoints stay; the message names the
            folder, the free space and how to go on.
    """
    from clapkit.train.state import save_training_state

    final = Path(folder)
    staged = _partial(final)
    if accelerator.is_main_process:
        final.parent.mkdir(parents=True, exist_ok=True)
        if staged.exists():  # left by a save that was killed
            shutil.rmtree(staged)
        staged.mkdir()
    accelerator.wait_for_everyone()
    try:
        save_training_state(accelerator, staged)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for name, content in (files or {}).items():
                path = staged / name
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
            write_marker(staged)
            replace_folder(staged, final)
    except Exception as error:
        shutil.rmtree(staged, ignore_errors=True)
        previous = _newest_complete(final.parent)
        kept = "no earlier checkpoint exists" if previous is None else f"{previous} is intact"
        failure = write_failure(error, f"checkpoint {final.name}", final, kept=kept)
        if failure is None:
            raise
        raise failure from error
    accelerator.wait_for_everyone()
    return final


def verify_checkpoint(folder: str | Path) -> Path:
    """Check that a checkpoint is complete, whole and holds nothing that could run code.

    Args:
        folder: a checkpoint folder written by :func:`save_checkpoint`.

    Returns:
        ``folder`` as a ``Path``.

    Raises:
        CheckpointError: no such folder, no completion marker (an interrupted save), a file
            missing, of another size or sha256 than recorded, or a safetensors file that cannot
            be read. The message names the file.
        UnsafeCheckpointError: a file in it is a pickle (or has a pickle's name), or the marker
            is of an older clapkit whose checkpoints hold pickles.
    """
    path = Path(folder)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    for file in check_files(path):
        if file.suffix == ".safetensors":
            _check_safetensors(file, path)
    return path


def load_checkpoint(accelerator: Any, folder: str | Path, *, force: bool = False) -> None:
    """Restore the training state saved by :func:`save_checkpoint` (call on every process,
    after ``accelerator.prepare`` and ``register_for_checkpointing``).

    Nothing is unpickled: the state is read from JSON and safetensors only.

    Args:
        accelerator: the run's accelerator.
        folder: a checkpoint folder (verified by :func:`verify_checkpoint` before).
        force: a failed restore of the random generators only warns (``--resume-force``).

    Raises:
        clapkit.train.state.RandomStateError: the random generators could not be restored
            (without ``force``).
        ValueError: the checkpoint holds other training state than this run tracks.
    """
    from clapkit.train.state import load_training_state

    load_training_state(accelerator, Path(folder), force=force)


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

    Interrupted saves (staging folders, folders without a marker) and corrupt checkpoints (a
    size or sha256 that differs from the marker's) are passed over with a warning that names
    them; the previous complete one is returned. A checkpoint holding a pickle stops the search
    (:class:`UnsafeCheckpointError`): it was not written by clapkit.

    Args:
        checkpoints: the folder holding the run's checkpoint folders.

    Returns:
        The chosen checkpoint folder.

    Raises:
        CheckpointError: no complete checkpoint; the message lists what was passed over and why.
        UnsafeCheckpointError: the newest checkpoint (or one before the first complete one)
            holds a pickle.
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
        except UnsafeCheckpointError:
            raise  # a planted or foreign file: stop, never fall back silently
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
        """The fields as a dict (saved as JSON: ``clapkit.train.state``)."""
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
