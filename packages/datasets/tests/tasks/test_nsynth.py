"""The four NSynth tasks on entries of the published nsynth-test examples.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clapkit.data.tasks import TaskLayoutError, get_task

Writer = Callable[..., Path]

# nsynth-test.jsonwav.tar.gz, examples.json: two entries as published (copied in
# github.com/erl-j/audio-latent-space-cartography-demo, src/pointData.js), field for field.
PUBLISHED = {
    "organ_electronic_001-060-127": {
        "qualities": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0], "pitch": 60, "note": 248525,
        "instrument_source_str": "electronic", "velocity": 127,
        "instrument_str": "organ_electronic_001", "instrument": 8, "sample_rate": 16000,
        "qualities_str": ["dark"], "instrument_source": 1,
        "note_str": "organ_electronic_001-060-127", "instrument_family": 6,
        "instrument_family_str": "organ",
    },
    "keyboard_electronic_002-060-050": {
        "qualities": [0] * 10, "pitch": 60, "note": 214594, "instrument_source_str": "electronic",
        "velocity": 50, "instrument_str": "keyboard_electronic_002", "instrument": 50,
        "sample_rate": 16000, "qualities_str": [], "instrument_source": 1,
        "note_str": "keyboard_electronic_002-060-050", "instrument_family": 4,
        "instrument_family_str": "keyboard",
    },
}  # fmt: skip
# Two of the test notes outside MIDI 21-108 (magenta issue 1143); note_str encodes
# {instrument}-{pitch}-{velocity}, the other fields follow it.
OUTSIDE = {"bass_synthetic_009-010-025": ("bass", 10, 25),
           "mallet_acoustic_056-110-050": ("mallet", 110, 50)}  # fmt: skip


def _entry(name: str, family: str, pitch: int, velocity: int) -> dict[str, Any]:
    return {
        **PUBLISHED["keyboard_electronic_002-060-050"], "pitch": pitch, "velocity": velocity,
        "note_str": name, "instrument_str": name.rsplit("-", 2)[0],
        "instrument_family_str": family,
    }  # fmt: skip


def _nsynth(root: Path, write_clip: Writer, outside: bool = True) -> Path:
    notes = dict(PUBLISHED)
    if outside:
        notes |= {name: _entry(name, *fields) for name, fields in OUTSIDE.items()}
    for name in notes:
        write_clip(root / "audio" / f"{name}.wav")
    (root / "examples.json").write_text(json.dumps(notes))
    return root


def test_nsynth_pitch_leaves_out_notes_outside_21_108(tmp_path: Path, write_clip: Writer) -> None:
    pitch = get_task("nsynth-pitch").load(_nsynth(tmp_path, write_clip))
    assert len(pitch.class_names) == 88
    assert (pitch.class_names[0], pitch.class_names[-1]) == ("21", "108")
    assert [r.key for r in pitch.records] == [
        "audio/organ_electronic_001-060-127",
        "audio/keyboard_electronic_002-060-050",
    ]
    assert pitch.targets().tolist() == [60 - 21, 60 - 21]
    assert pitch.warnings[0] == (
        "NSynth pitch: 2 of 4 notes lie outside MIDI 21-108 and are left out (as HEAR's task "
        "does), e.g. ['bass_synthetic_009-010-025 (pitch 10)', "
        "'mallet_acoustic_056-110-050 (pitch 110)']"
    )
    assert pitch.prompts()[0] == ["this is a sound of pitch 21"]
    # the other facets keep every note
    assert len(get_task("nsynth-velocity").load(tmp_path)) == 4


def test_nsynth_other_facets(tmp_path: Path, write_clip: Writer) -> None:
    root = _nsynth(tmp_path, write_clip)
    velocity = get_task("nsynth-velocity").load(root)
    assert velocity.targets().tolist() == [4, 1, 0, 1]
    qualities = get_task("nsynth-qualities").load(root)
    assert qualities.task.kind == "multilabel"
    assert [r.labels for r in qualities.records][:2] == [("dark",), ()]
    assert qualities.targets().sum(dim=1).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert qualities.prompts()[9] == ["this is a sound of tempo synced"]
    instrument = get_task("nsynth-instrument").load(root)
    assert instrument.targets().tolist() == [6, 4, 0, 5]
    assert instrument.prompts()[9] == ["this is a sound of synth lead"]
    assert instrument.warnings == ("NS-Instr test: 4 clips found, 4096 published",)


def test_nsynth_malformed(tmp_path: Path, write_clip: Writer) -> None:
    root = _nsynth(tmp_path, write_clip, outside=False)
    notes = json.loads((root / "examples.json").read_text())
    del notes["organ_electronic_001-060-127"]["pitch"]
    (root / "examples.json").write_text(json.dumps(notes))
    with pytest.raises(TaskLayoutError, match=r"'organ_electronic_001-060-127' lacks \['pitch'\]"):
        get_task("nsynth-pitch").load(root)
    notes["organ_electronic_001-060-127"]["pitch"] = 60
    notes["organ_electronic_001-060-127"]["velocity"] = 90
    (root / "examples.json").write_text(json.dumps(notes))
    with pytest.raises(TaskLayoutError, match=r"unknown class '90'"):
        get_task("nsynth-velocity").load(root)
    (root / "examples.json").write_text("{not json")
    with pytest.raises(TaskLayoutError, match=r"examples\.json: not valid JSON"):
        get_task("nsynth-pitch").load(root)
