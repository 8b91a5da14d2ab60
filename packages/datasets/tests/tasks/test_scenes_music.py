"""TUT2017 scenes, GTZAN music/speech and genres, Beijing Opera."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clapkit.data.tasks import TaskFileNotFoundError, TaskLayoutError, get_task

Writer = Callable[..., Path]


def test_tut2017_development_meta(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    # TUT-acoustic-scenes-2017-development.meta.zip (Zenodo 400515), meta.txt: file, scene,
    # location id; a001_0_10.wav is the first development segment (TUT-ARG/DCASE2017-baseline)
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


def test_tut2017_evaluation_reads_evaluate_txt(
    tmp_path: Path, write_clip: Writer, write_table: Writer
) -> None:
    # TUT-acoustic-scenes-2017-evaluation.meta.zip (Zenodo 1040168) ships
    # evaluation_setup/evaluate.txt (audio/{name}.wav<TAB>scene), test.txt and map.txt and no
    # meta.txt; TUT-ARG/DCASE2017-baseline-system dcase_framework/datasets.py builds meta.txt
    # from evaluate.txt. The evaluation files carry ordinal names (map.txt maps them back);
    # the two names below are placeholders of that form.
    rows = [["audio/1.wav", "beach"], ["audio/2.wav", "tram"]]
    for row in rows:
        write_clip(tmp_path / row[0])
    write_table(tmp_path / "evaluation_setup" / "evaluate.txt", rows, delimiter="\t")
    write_table(tmp_path / "evaluation_setup" / "test.txt", [[r[0]] for r in rows])
    data = get_task("tut2017").load(tmp_path)
    assert data.split == "evaluation"
    assert data.targets().tolist() == [0, 14]
    assert data.records[1].key == "audio/2"
    # no meta.txt and no evaluate.txt: both named
    (tmp_path / "evaluation_setup" / "evaluate.txt").unlink()
    with pytest.raises(TaskFileNotFoundError, match=r"meta\.txt or evaluation_setup/evaluate"):
        get_task("tut2017").load(tmp_path)
    # the development set has meta.txt only: evaluate.txt is not looked for
    with pytest.raises(TaskFileNotFoundError, match=r"meta\.txt not found"):
        get_task("tut2017").load(tmp_path, split="development")


def test_gtzan_music_speech(tmp_path: Path, write_clip: Writer) -> None:
    # marsyas music_speech.tar.gz: music_wav/, speech_wav/ (bagpipe.wav, comedy.wav published)
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
    # marsyas genres.tar.gz: genres/{genre}/{genre}.000NN.au, e.g. genres/blues/blues.00000.au
    genres = get_task("gtzan-genres").class_names
    assert genres is not None
    for genre in genres:
        write_clip(tmp_path / "genres" / genre / f"{genre}.00000.au", format="AU")
    write_clip(tmp_path / "genres" / "hiphop" / "hiphop.00001.au", format="AU")
    data = get_task("gtzan-genres").load(tmp_path)
    assert len(data) == 11
    assert data.targets().bincount().tolist() == [1, 1, 1, 1, 2, 1, 1, 1, 1, 1]
    assert data.prompts()[4] == ["this is a sound of hip hop"]
    # a converted copy beside the original is one clip twice: both named
    write_clip(tmp_path / "genres" / "jazz" / "jazz.00000.wav")
    with pytest.raises(TaskLayoutError, match=r"jazz\.00000\.au and .*jazz\.00000\.wav are one "
                       r"clip key 'genres/jazz/jazz\.00000'"):  # fmt: skip
        get_task("gtzan-genres").load(tmp_path)
    (tmp_path / "genres" / "jazz" / "jazz.00000.wav").unlink()
    write_clip(tmp_path / "genres" / "rock" / "jazz.00054.au", format="AU")
    with pytest.raises(TaskLayoutError, match=r"jazz\.00054\.au: expected a name rock\.000NN"):
        get_task("gtzan-genres").load(tmp_path)


def test_gtzan_genres_kaggle_copy(tmp_path: Path, write_clip: Writer) -> None:
    for genre in get_task("gtzan-genres").class_names or ():
        write_clip(tmp_path / "genres_original" / genre / f"{genre}.00003.wav")
    assert len(get_task("gtzan-genres").load(tmp_path)) == 10


# Zenodo record 1285212, beijing_opera_percussion_instrument_1.0.zip: one flat folder of
# {freesound id}__{user}__{instrument}-{nn}.wav (two real names; the other two follow the form)
BEIJING_FLAT = (
    "205972__ajaysm__daluo-01.wav", "205973__ajaysm__bangu-06.wav",
    "205990__ajaysm__naobo-02.wav", "206001__ajaysm__xiaoluo-11.wav",
)  # fmt: skip


def test_beijing_opera_published_flat_folder(tmp_path: Path, write_clip: Writer) -> None:
    root = tmp_path / "beijing_opera_percussion_instrument_1.0"
    for name in BEIJING_FLAT:
        write_clip(root / name)
    data = get_task("beijing-opera").load(tmp_path)
    assert data.class_names == ("bangu", "daluo", "naobo", "xiaoluo")
    assert [r.labels[0] for r in data.records] == ["bangu", "daluo", "naobo", "xiaoluo"]
    assert data.records[1].key == "beijing_opera_percussion_instrument_1.0/205972__ajaysm__daluo-01"
    assert data.warnings == ("BeijingOp all: 4 clips found, 236 published",)
    (root / BEIJING_FLAT[2]).unlink()
    assert "no clip of 'naobo'" in get_task("beijing-opera").load(tmp_path).warnings[0]
    write_clip(root / "205999__ajaysm__gong-01.wav")
    with pytest.raises(TaskLayoutError, match=r"gong-01\.wav: no instrument in the name"):
        get_task("beijing-opera").load(tmp_path)


def test_beijing_opera_class_folders(tmp_path: Path, write_clip: Writer) -> None:
    # the one-folder-per-instrument form some copies use (not the Zenodo archive's)
    for folder in ("Bangu", "Daluo", "Naobo", "XiaoLuo"):
        for n in range(2):
            write_clip(tmp_path / "BeijingOpera" / folder / f"{folder.lower()}_{n}.wav")
    data = get_task("beijing-opera").load(tmp_path)
    assert data.targets().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert data.warnings == ("BeijingOp all: 8 clips found, 236 published",)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskFileNotFoundError, match=r"no \.wav under .*empty"):
        get_task("beijing-opera").load(tmp_path / "empty")
