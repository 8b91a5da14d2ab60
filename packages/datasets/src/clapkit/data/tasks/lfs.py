"""Git LFS pointer files: what a clone made without Git LFS holds in place of each audio file.

A pointer is a small text file whose first line is ``version https://git-lfs.github.com/spec/v1``
(then ``oid sha256:...`` and ``size ...``). A decoder reports it as undecodable audio; the task
readers name it as what it is, with the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

LFS_HEADER = b"version https://git-lfs.github.com/spec/"
# The pointer format caps a pointer at 1024 bytes; real audio is larger.
LFS_POINTER_MAX_BYTES = 1024


def is_lfs_pointer(path: Path) -> bool:
    """Whether ``path`` is a Git LFS pointer file (small, starting with the spec line).

    Args:
        path: a file.

    Returns:
        ``True`` for a pointer; ``False`` for anything else, an absent file included.
    """
    try:
        if path.stat().st_size > LFS_POINTER_MAX_BYTES:
            return False
        with path.open("rb") as handle:
            return handle.read(len(LFS_HEADER)) == LFS_HEADER
    except OSError:
        return False


def lfs_pointer_message(title: str, paths: Iterable[Path]) -> str | None:
    """The error text for the Git LFS pointers among ``paths``, or ``None`` if there are none.

    Args:
        title: the dataset's name.
        paths: the clips' audio files.

    Returns:
        A message naming how many clips are pointers, the first few, and the fix.
    """
    pointers = [str(p) for p in paths if is_lfs_pointer(p)]
    if not pointers:
        return None
    return (
        f"{title}: {len(pointers)} clips are Git LFS pointer files, not audio, e.g. "
        f"{pointers[:3]}; the repository was cloned without Git LFS: run `git lfs pull` in it "
        "(or `git lfs install` then clone again)"
    )
