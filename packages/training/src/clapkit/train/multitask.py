"""Multi-task audio-to-text pretraining (Pengi-style, HTSAT-22): the smoke run's data.

::

    train, heldout = fsdd_multitask_manifests("data/fsdd", out, "theo", None)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from clapkit.data import (
    classification_records,
    read_manifest,
    write_multitask_manifest,
)
from clapkit.train.demo import fsdd_manifests

__all__ = ["fsdd_multitask_manifests"]


def fsdd_multitask_manifests(
    root: str | Path, out: Path, heldout_speaker: str, clips_per_digit: int | None
) -> tuple[str, str]:
    """The smoke data: "which digit" and "which speaker" on three FSDD speakers (train) and
    "which digit" on the fourth (eval), built with ``clapkit.data``'s builders.

    Args:
        root: the FSDD folder (``recordings/{digit}_{speaker}_{index}.flac``).
        out: where the manifests go.
        heldout_speaker: the speaker only heard in the eval manifest.
        clips_per_digit: the first N recordings of each speaker and digit (None = all).

    Returns:
        The paths of the multi-task train and held-out manifests.
    """
    train, heldout = fsdd_manifests(root, out, heldout_speaker, clips_per_digit)
    clips = read_manifest(train)
    speakers = [dataclasses.replace(r, labels=(str(r.extra["speaker"]),)) for r in clips]
    records = classification_records(clips, task="digit", prompt="which digit")
    records += classification_records(speakers, task="speaker", prompt="which speaker")
    test = classification_records(read_manifest(heldout), task="digit", prompt="which digit")
    paths = out / "multitask_train.jsonl", out / f"multitask_heldout_{heldout_speaker}.jsonl"
    write_multitask_manifest(records, paths[0])
    write_multitask_manifest(test, paths[1])
    return str(paths[0]), str(paths[1])
