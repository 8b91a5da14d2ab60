"""The captioner's training records.

::

    records = one_caption_each(records)           # --captions-per-clip all
"""

from __future__ import annotations

import dataclasses

from clapkit.data import ManifestRecord

__all__ = ["one_caption_each"]


def one_caption_each(records: list[ManifestRecord]) -> list[ManifestRecord]:
    """Every (clip, caption) pair as its own record (``--captions-per-clip all``)."""
    return [
        dataclasses.replace(r, captions=(c,), key=f"{r.key}#{j}")
        for r in records
        for j, c in enumerate(r.captions)
    ]
