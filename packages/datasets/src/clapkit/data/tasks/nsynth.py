"""NSynth test set (Engel et al. 2017): pitch, velocity, qualities and instrument family.

Layout (``nsynth-test.jsonwav.tar.gz``): ``audio/{note_str}.wav`` and ``examples.json``, an
object keyed by ``note_str`` whose values hold ``pitch`` (MIDI 0-127), ``velocity``
(25/50/75/100/127), ``qualities_str`` and ``instrument_family_str``.

NSynth pitch keeps the 88 piano-range classes, MIDI 21-108, as HEAR's ``nsynth_pitch`` task does
(``pitch_range_min`` 21, ``pitch_range_max`` 108 in hear-preprocess): about 0.8% of the 4,096
test notes lie outside (``bass_synthetic_009-010-025`` at pitch 10, ``mallet_acoustic_056-110-050``
at 110; magenta issue 1143). They are left out of the pitch task and counted in its warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import Task, TaskKind, TaskLayoutError, humanize
from clapkit.data.tasks.layout import check_label, keep_present, read_json, record

Read = tuple[list[ManifestRecord], tuple[str, ...], list[str]]

PITCHES = tuple(str(midi) for midi in range(21, 109))
VELOCITIES = ("25", "50", "75", "100", "127")
QUALITIES = (
    "bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic",
    "nonlinear_env", "percussive", "reverb", "tempo-synced",
)  # fmt: skip
FAMILIES = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
    "synth_lead", "vocal",
)  # fmt: skip
FIELDS = ("pitch", "velocity", "qualities_str", "instrument_family_str")
LAYOUT = "audio/{note_str}.wav, examples.json (nsynth-test)"
CHECKED = "nsynth-test.jsonwav.tar.gz: examples.json"
HEAR_PITCH = "; hearbenchmark/hear-preprocess: hearpreprocess/nsynth_pitch.py (pitch 21-108)"


def _labels(facet: str, note: dict[str, Any]) -> list[str]:
    if facet == "pitch":
        return [str(note["pitch"])]
    if facet == "velocity":
        return [str(note["velocity"])]
    if facet == "qualities":
        return list(note["qualities_str"])
    return [note["instrument_family_str"]]


def _reader(facet: str, classes: tuple[str, ...]) -> Callable[[Path, str], Read]:
    def read(root: Path, split: str) -> Read:
        meta = root / "examples.json"
        notes = read_json(meta, "an object keyed by note_str (NSynth examples.json)")
        if not isinstance(notes, dict):
            raise TaskLayoutError(f"{meta}: expected an object keyed by note_str")
        records = []
        outside: list[str] = []
        for name, note in notes.items():
            absent = [f for f in FIELDS if not isinstance(note, dict) or f not in note]
            if absent:
                raise TaskLayoutError(f"{meta}: note {name!r} lacks {absent}")
            labels = _labels(facet, note)
            if facet == "pitch" and labels[0] not in classes:
                outside.append(f"{name} (pitch {labels[0]})")
                continue
            for label in labels:
                check_label(label, classes, f"{meta}: note {name!r}")
            records.append(record(root, root / "audio" / f"{name}.wav", labels=labels))
        warnings: list[str] = []
        if outside:
            warnings.append(
                f"NSynth pitch: {len(outside)} of {len(notes)} notes lie outside MIDI 21-108 "
                f"and are left out (as HEAR's task does), e.g. {outside[:3]}"
            )
        return keep_present(records, "NSynth", False, warnings), classes, warnings

    return read


def pitch_text(label: str) -> str:
    """``"60"`` -> ``"pitch 60"`` (MIDI number; the paper does not print its pitch prompt)."""
    return f"pitch {label}"


def velocity_text(label: str) -> str:
    """``"100"`` -> ``"velocity 100"``."""
    return f"velocity {label}"


def quality_text(label: str) -> str:
    """``"tempo-synced"`` -> ``"tempo synced"``, ``"fast_decay"`` -> ``"fast decay"``."""
    return humanize(label.replace("-", " "))


def _task(
    facet: str,
    title: str,
    kind: TaskKind,
    classes: tuple[str, ...],
    label_text: Callable[[str], str],
    chance: float,
    paper: tuple[tuple[str, float], ...],
) -> Task:
    return Task(
        name=f"nsynth-{facet}",
        title=title,
        kind=kind,
        reader=_reader(facet, classes),
        splits=(("test", 4096),),
        class_names=classes,
        label_text=label_text,
        metrics=("mAP",) if kind == "multilabel" else ("accuracy",),
        chance=chance,
        paper=paper,
        download="https://magenta.tensorflow.org/datasets/nsynth (nsynth-test.jsonwav.tar.gz)",
        license="CC BY 4.0",
        layout=LAYOUT,
        checked=CHECKED + (HEAR_PITCH if facet == "pitch" else ""),
    )


NSYNTH_TASKS = (
    _task("pitch", "NSynth pitch", "multiclass", PITCHES, pitch_text, 0.015,
          (("table2/CLAP 2023", 0.444),)),
    _task("velocity", "NSynth velocity", "multiclass", VELOCITIES, velocity_text, 0.2,
          (("table2/CLAP 2023", 0.222),)),
    _task("qualities", "NSynth qualities", "multilabel", QUALITIES, quality_text, 0.1,
          (("table2/CLAP 2023", 0.489),)),
    _task("instrument", "NS-Instr", "multiclass", FAMILIES, humanize, 0.09,
          (("table1/HTSAT-22+GPT2", 0.425), ("table2/CLAP 2023", 0.479))),
)  # fmt: skip
