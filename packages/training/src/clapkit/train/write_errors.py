"""Write errors of the file system named plainly: disk full, quota, read-only.

A checkpoint or ``best/`` write that fails deep inside torch or safetensors surfaces as, e.g.,
``RuntimeError: basic_ios::clear: iostream error`` or ``SafetensorError: ... (os error 28)``.
:func:`write_failure` turns such an error into a :class:`CheckpointWriteError` that says what
was being written, where, why (``ENOSPC``, ``EDQUOT``, ``EROFS``...), how much space was free,
what was kept and how to go on.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

__all__ = ["WRITE_ERRNOS", "CheckpointWriteError", "error_number", "write_failure"]

WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EFBIG: "the file is larger than allowed",
    errno.EIO: "an input/output error of the device",
    errno.EACCES: "permission denied",
}
"""The write errors named (others pass through unchanged)."""
_OS_ERROR = re.compile(r"os error (\d+)")


class CheckpointWriteError(OSError):
    """A checkpoint or model folder could not be written; the message names what, where, why,
    the free space and how to resume. ``errno`` is the file system's error number."""

    def __str__(self) -> str:
        return str(self.strerror)


def error_number(error: BaseException) -> int | None:
    """The ``errno`` behind ``error``: an ``OSError``'s own, one in its chain of causes, or
    one in the text of a safetensors error (``(os error 28)``).

    Args:
        error: the exception a write raised.

    Returns:
        The error number, or None when none is known.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        found = _OS_ERROR.search(str(seen))
        if found:
            return int(found.group(1))
        seen = seen.__cause__ or seen.__context__
    return None


def _free(path: Path) -> str:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                free = shutil.disk_usage(folder).free
            except OSError:
                return "unknown space"
            return (
                f"{free / 2**20:.1f} MiB free" if free >= 2**20 else f"{free / 2**10:.0f} KiB free"
            )
    return "unknown space"


def write_failure(
    error: BaseException, what: str, where: Path, *, kept: str
) -> CheckpointWriteError | None:
    """The :class:`CheckpointWriteError` that names a failed write, if it is one.

    Args:
        error: what the write raised.
        what: what was being written (``"checkpoint step_00000100"``, ``"best/"``).
        where: the folder it was written to.
        kept: what is intact (``"checkpoints/step_00000090 is intact"``).

    Returns:
        The error to raise instead, or None when ``error`` is no file-system write error (a
        bug, an interruption: raise it as it is).
    """
    number = error_number(error)
    if number is None:
        if not isinstance(error, OSError) and "iostream error" not in str(error):
            return None
        reason = f"a write error ({error})"
    else:
        if number not in WRITE_ERRNOS:
            return None
        reason = f"{WRITE_ERRNOS[number]} ({errno.errorcode.get(number, number)})"
    message = (
        f"could not write {what} to {where}: {reason}; {_free(where)} on that file system. "
        f"The partial folder was removed and {kept}. Free some space (or fix the file system) "
        "and go on with --resume latest"
    )
    return CheckpointWriteError(number or 0, message, os.fspath(where))
