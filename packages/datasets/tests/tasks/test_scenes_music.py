"""TUT2017 scenes, GTZAN music/speech and genres, Beijing Opera and the four NSynth tasks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clapkit.data.tasks import TaskFileNotFoundError, TaskLayoutError, get_task

Writer = Callable[..., Path]


def test_tut2017_meta(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    rows = [["audio/a001_0_10.wav", "residential_area", "a001"], ["audio/b020_90_100.wav",
            "cafe/restaurant", "b020"]]  # fmt: skip
    for row in rows:
        write_clip(tmp_path / row[0])
    write_table(tmp_path / "meta.txt", rows, delimiter="\t")
    data = get_task("tut2017").load(tmp_path, split="development")
    assert [r.labels for r in data.records] == [("residential_area",), ("cafe/restaurant",)]
    assert data.records[0].extra["split"] == "development"
    assert data.prompts()[2] == ["this is a sound of cafe or restaurant"]
    assert data.warnings == ("TUT17 development: 2 clips found, 4680 published",)
    assert get_task("tut2017").split == "evaluation"
    write_table(tmp_path / "meta.txt", [["audio/a001_0_10.wav", "kitchen"]], delimiter="\t")
    with pytest.raises(TaskLayoutError, match=r"meta\.txt:1: unknown class 'kitchen'"):
        get_task("tut2017").load(tmp_path)


def test_gtzan_music_speech(tmp_path: Path, write_clip: Writer) -> None:
    for name in ("music_wav/bagpipe.wav", "music_wav/beat.wav", "speech_wav/comedy.wav"):
        write_clip(tmp_path / name)
    data = get_task("gtzan-ms").load(tmp_path)
    assert data.class_names == ("music", "speech")
    assert data.targets().tolist() == [0, 0, 1]
    assert data.records[2].key == "speech_wav/comedy"
    (tmp_path / "speech_wav" / "comedy.wav").unlink()
    (tmp_path / "speech_wav").rmdir()
    with pytest.raises(TaskFileNotFoundError, match="speech_wav not found; expected the speech"):
        get_task("gtzan-ms").load(tmp_path)


def test_gtzan_genres_au(tmp_path: Path, write_clip: Writer) -> None:
    genres = get_task("gtzan-genres").class_names
    assert genres is not None
    for genre in genres:
        write_clip(tmp_path / "genres" / genre / f"{genre}.00000.au", format="AU")
    write_clip(tmp_path / "genres" / "hiphop" / "hiphop.00001.au", format="AU")
    data = get_task("gtzan-genres").load(tmp_path)
    assert len(data) == 11
    assert data.targets().bincount().tolist() == [1, 1, 1, 1, 2, 1, 1, 1, 1, 1]
    assert data.prompts()[4] == ["this is a sound of hip hop"]
    write_clip(tmp_path / "genres" / "rock" / "jazz.00054.au", format="AU")
    with pytest.raises(TaskLayoutError, match=r"jazz\.00054\.au: expected a name rock\.000NN"):
        get_task("gtzan-genres").load(tmp_path)


def test_gtzan_genres_kaggle_copy(tmp_path: Path, write_clip: Writer) -> None:
    for genre in get_task("gtzan-genres").class_names or ():
        write_clip(tmp_path / "genres_original" / genre / f"{genre}.00003.wav")
    assert len(get_task("gtzan-genres").load(tmp_path)) == 10


def test_beijing_opera_class_folders(tmp_path: Path, write_clip: Writer) -> None:
    for folder in ("Bangu", "Daluo", "Naobo", "XiaoLuo"):
        for n in range(2):
            write_clip(tmp_path / "BeijingOpera" / folder / f"{folder.lower()}_{n}.wav")
    data = get_task("beijing-opera").load(tmp_path)
    assert data.targets().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert data.warnings == ("BeijingOp all: 8 clips found, 236 published",)
    for path in (tmp_path / "BeijingOpera" / "Naobo").iterdir():
        path.unlink()
    (tmp_path / "BeijingOpera" / "Naobo").rmdir()
    with pytest.raises(TaskLayoutError, match="no folder 'naobo'"):
        get_task("beijing-opera").load(tmp_path)


def _note(name: str, pitch: int, velocity: int, family: str, qualities: list[str]) -> dict:
    return {
        "note": 217499, "sample_rate": 16000, "pitch": pitch, "velocity": velocity,
        "instrument_str": name.rsplit("-", 2)[0], "note_str": name, "instrument_source": 2,
        "instrument_source_str": "synthetic", "instrument_family": 0,
        "instrument_family_str": family, "instrument": 656, "qualities_str": qualities,
        "qualities": [int(q in qualities) for q in ("bright", "dark")] + [0] * 8,
    }  # fmt: skip


def _nsynth(root: Path, write_clip: Writer) -> Path:
    notes = {
        "bass_synthetic_068-049-025": _note("bass_synthetic_068-049-025", 49, 25, "bass", ["dark"]),
        "synth_lead_synthetic_000-108-127": _note(
            "synth_lead_synthetic_000-108-127", 108, 127, "synth_lead",
            ["bright", "tempo-synced"]),
        "keyboard_acoustic_004-021-075": _note("keyboard_acoustic_004-021-075", 21, 75,
                                               "keyboard", []),
    }  # fmt: skip
    for name in notes:
        write_clip(root / "audio" / f"{name}.wav")
    (root / "examples.json").write_text(json.dumps(notes))
    return root


def test_nsynth_four_facets(tmp_path: Path, write_clip: Writer) -> None:
    root = _nsynth(tmp_path, write_clip)
    pitch = get_task("nsynth-pitch").load(root)
    assert len(pitch.class_names) == 88
    assert pitch.targets().tolist() == [49 - 21, 108 - 21, 0]
    assert pitch.prompts()[0] == ["this is a sound of pitch 21"]
    velocity = get_task("nsynth-velocity").load(root)
    assert velocity.targets().tolist() == [0, 4, 2]
    qualities = get_task("nsynth-qualities").load(root)
    assert qualities.task.kind == "multilabel"
    assert [r.labels for r in qualities.records] == [("dark",), ("bright", "tempo-synced"), ()]
    assert qualities.targets().sum(dim=1).tolist() == [1.0, 2.0, 0.0]
    assert qualities.prompts()[9] == ["this is a sound of tempo synced"]
    instrument = get_task("nsynth-instrument").load(root)
    assert instrument.targets().tolist() == [0, 9, 4]
    assert instrument.prompts()[9] == ["this is a sound of synth lead"]
    assert instrument.records[0].key == "audio/bass_synthetic_068-049-025"
    assert instrument.warnings == ("NS-Instr test: 3 clips found, 4096 published",)


def test_nsynth_malformed(tmp_path: Path, write_clip: Writer) -> None:
    root = _nsynth(tmp_path, write_clip)
    notes = json.loads((root / "examples.json").read_text())
    del notes["bass_synthetic_068-049-025"]["pitch"]
    (root / "examples.json").write_text(json.dumps(notes))
    with pytest.raises(TaskLayoutError, match=r"'bass_synthetic_068-049-025' lacks \['pitch'\]"):
        get_task("nsynth-pitch").load(root)
    (root / "examples.json").write_text("{not json")
    with pytest.raises(TaskLayoutError, match=r"examples\.json: not valid JSON"):
        get_task("nsynth-pitch").load(root)
