"""Work split over the processes of a run and gathered back in order: one helper for every
evaluation (zero-shot, fine-tuning logits, answers, captions, ``recipes/evaluate.py``).

Each process takes a contiguous share of the items (``accelerator.split_between_processes``),
computes its part and all parts are gathered in process order, so concatenating them gives the
items' own order::

    logits = torch.cat(map_shares(accelerator, indices, score))     # every clip, in order
    found = map_files(accelerator, paths, embed, on_error="skip")   # bad files left out

An error on one process is raised on every process (none waits in the gather for ever).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

__all__ = ["FileResults", "OnError", "map_files", "map_shares", "skip_bad_files"]

T = TypeVar("T")
R = TypeVar("R")
OnError = Literal["raise", "skip"]


class ShareError(RuntimeError):
    """Another process's share failed (its error, by type and message)."""


def map_shares(accelerator: Any, items: Sequence[T], compute: Callable[[list[T]], R]) -> list[R]:
    """``compute`` on this process's contiguous share of ``items``; every share's result.

    Call it on every process. A process whose share is empty computes nothing and contributes
    no result.

    Args:
        accelerator: the run's ``accelerate.Accelerator`` (or anything with
            ``split_between_processes`` and ``num_processes``).
        items: the work, split into contiguous shares in process order.
        compute: a share (a list, never empty) -> its result.

    Returns:
        The non-empty shares' results in process order (concatenated, they follow ``items``).

    Raises:
        Exception: ``compute``'s own error on the process where it failed.
        ShareError: on the other processes, naming that error.
    """
    failure: Exception | None = None
    with accelerator.split_between_processes(list(items)) as share:
        try:
            part: tuple[bool, Any] = (True, compute(share) if share else None)
        except Exception as error:  # re-raised below, after every process has gathered
            part, failure = (False, f"{type(error).__name__}: {error}"), error
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object  # type: ignore[import-untyped]

        parts = gather_object([part])
    else:
        parts = [part]
    if failure is not None:
        raise failure
    errors = [payload for ok, payload in parts if not ok]
    if errors:
        raise ShareError(f"another process failed: {errors[0]}")
    return [payload for ok, payload in parts if ok and payload is not None]


@dataclass
class FileResults(Generic[T]):
    """What :func:`skip_bad_files` gives: the chunks' results and which files they cover.

    Attributes:
        parts: ``compute``'s result for each chunk of good files, in order.
        kept: indices (into the paths given) of the files the parts cover, in order.
        skipped: ``{path: reason}`` of the files left out.
    """

    parts: list[T] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def skip_bad_files(
    compute: Callable[[list[Any]], T],
    paths: Sequence[Any],
    *,
    on_error: OnError = "raise",
    chunk: int = 128,
    done: Callable[[int], None] | None = None,
) -> FileResults[T]:
    """Run ``compute`` over ``paths`` in chunks; with ``on_error="skip"``, leave bad files out.

    A chunk whose ``compute`` raises ``clapkit.audio.AudioLoadError`` for one of its files is
    run again without that file (the error names it), until it passes: the results are those
    of the good files alone, and ``skipped`` says why each other file was left out.

    Args:
        compute: a list of files -> a result for them (embeddings ``[n, d]``, captions).
        paths: the files.
        on_error: ``"raise"`` re-raises the first bad file's error; ``"skip"`` leaves it out.
        chunk: files per ``compute`` call.
        done: called with the number of files finished after each chunk (a progress bar).

    Returns:
        The chunks' results, the kept indices and the skipped files.

    Raises:
        clapkit.audio.AudioLoadError: a bad file and ``on_error="raise"``, or an error that
            names no file of the chunk.
        ValueError: an unknown ``on_error`` or ``chunk < 1``.
    """
    from clapkit.audio import AudioLoadError

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    out: FileResults[T] = FileResults()
    for start in range(0, len(paths), chunk):
        batch = list(range(start, min(start + chunk, len(paths))))
        while batch:
            try:
                result = compute([paths[i] for i in batch])
            except AudioLoadError as error:
                bad = [i for i in batch if str(paths[i]) == error.source]
                if on_error == "raise" or not bad:
                    raise
                out.skipped[str(paths[bad[0]])] = error.cause
                batch.remove(bad[0])
                continue
            out.parts.append(result)
            out.kept.extend(batch)
            break
        if done is not None:
            done(min(start + chunk, len(paths)) - start)
    return out


def map_files(
    accelerator: Any,
    paths: Sequence[Any],
    compute: Callable[[list[Any]], T],
    *,
    on_error: OnError = "raise",
    chunk: int = 128,
    done: Callable[[int], None] | None = None,
) -> FileResults[T]:
    """:func:`skip_bad_files` over every process's share of ``paths``, gathered in order.

    Args:
        accelerator: the run's accelerator.
        paths: the files.
        compute: a chunk of files -> their result (embeddings, captions).
        on_error: ``"skip"`` leaves undecodable files out; ``"raise"`` fails on the first.
        chunk: files per ``compute`` call.
        done: called with the files finished after each chunk, on each process.

    Returns:
        Every chunk's result in file order, the kept files' indices (into ``paths``) and the
        skipped files with why, from all processes.
    """

    def share_results(share: list[tuple[int, Any]]) -> FileResults[T]:
        found = skip_bad_files(compute, [path for _, path in share],
                               on_error=on_error, chunk=chunk, done=done)  # fmt: skip
        found.kept = [share[i][0] for i in found.kept]
        return found

    out: FileResults[T] = FileResults()
    for found in map_shares(accelerator, list(enumerate(paths)), share_results):
        out.parts += found.parts
        out.kept += found.kept
        out.skipped.update(found.skipped)
    return out
