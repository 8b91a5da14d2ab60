"""Acoustic scenes and music: TUT2017 scenes, GTZAN music/speech and genres, Beijing Opera."""

from __future__ import annotations

from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import SOUND_TEMPLATES, Task, TaskLayoutError, humanize
from clapkit.data.tasks.layout import audio_files, check_label, read_table, record, require

Read = tuple[list[ManifestRecord], tuple[str, ...], list[str]]

TUT17_CLASSES = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store",
    "home", "library", "metro_station", "office", "park", "residential_area", "train", "tram",
)  # fmt: skip
GTZAN_GENRES = (
    "blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock",
)  # fmt: skip
GTZAN_MS_FOLDERS = {"music": "music_wav", "speech": "speech_wav"}
BEIJING_CLASSES = ("bangu", "daluo", "naobo", "xiaoluo")


def scene_text(label: str) -> str:
    """``"cafe/restaurant"`` -> ``"cafe or restaurant"``, ``"city_center"`` -> ``"city center"``."""
    return humanize(label.replace("/", " or "))


def genre_text(label: str) -> str:
    """``"hiphop"`` -> ``"hip hop"``; the other GTZAN genres are already words."""
    return "hip hop" if label == "hiphop" else humanize(label)


def read_tut2017(root: Path, split: str) -> Read:
    """TUT Acoustic Scenes 2017: ``meta.txt`` lines ``audio/{name}.wav<TAB>{scene}[<TAB>id]``.

    ``root`` is ``TUT-acoustic-scenes-2017-evaluation`` (split ``evaluation``) or
    ``TUT-acoustic-scenes-2017-development`` (split ``development``, all four folds).
    """
    meta = require(root, "meta.txt", "TUT2017", "tab-separated audio/{name}.wav, scene label")
    records = []
    for number, row in read_table(meta, ("file", "scene"), delimiter="\t", header=False):
        scene = check_label(row["scene"], TUT17_CLASSES, f"{meta}:{number}")
        records.append(record(root, root / row["file"], labels=(scene,), split=split))
    return records, TUT17_CLASSES, []


def read_gtzan_ms(root: Path, split: str) -> Read:
    """GTZAN music/speech (``music_speech/``): ``music_wav/*.wav`` and ``speech_wav/*.wav``."""
    records = []
    for label, name in GTZAN_MS_FOLDERS.items():
        folder = require(root, name, "GTZAN music/speech", f"the {label} clips (*.wav)")
        records += [record(root, path, labels=(label,)) for path in audio_files(folder)]
    return records, tuple(GTZAN_MS_FOLDERS), []


def read_gtzan_genres(root: Path, split: str) -> Read:
    """GTZAN genres: ``genres/{genre}/{genre}.000NN.au`` (the Kaggle copy's
    ``genres_original/{genre}/{genre}.000NN.wav`` is read too)."""
    base = root / "genres"
    if not base.is_dir() and (root / "genres_original").is_dir():
        base = root / "genres_original"
    records = []
    for genre in GTZAN_GENRES:
        folder = require(base.parent, f"{base.name}/{genre}", "GTZAN genres", f"{genre}.000NN.au")
        for path in audio_files(folder, (".au", ".wav")):
            if not path.name.startswith(f"{genre}."):
                raise TaskLayoutError(f"{path}: expected a name {genre}.000NN.au in {folder}")
            records.append(record(root, path, labels=(genre,)))
    return records, GTZAN_GENRES, []


def read_beijing_opera(root: Path, split: str) -> Read:
    """Beijing Opera percussion: one folder of wav per instrument (names in any case)."""
    folders = {p.name.lower(): p for p in root.rglob("*") if p.is_dir()}
    records = []
    for label in BEIJING_CLASSES:
        if label not in folders:
            raise TaskLayoutError(
                f"Beijing Opera: no folder {label!r} under {root}; expected one folder per "
                f"instrument {list(BEIJING_CLASSES)}"
            )
        records += [record(root, p, labels=(label,)) for p in audio_files(folders[label])]
    return records, BEIJING_CLASSES, []


SCENE_MUSIC_TASKS = (
    Task(
        name="tut2017",
        title="TUT17",
        kind="multiclass",
        reader=read_tut2017,
        splits=(("evaluation", 1620), ("development", 4680)),
        class_names=TUT17_CLASSES,
        templates=SOUND_TEMPLATES,
        label_text=scene_text,
        paper=(("table1/HTSAT-22+GPT2", 0.317), ("table2/CLAP 2023", 0.538)),
        download="https://zenodo.org/record/1040168 (evaluation), /record/400515 (development)",
        license="TUT licence: free for academic, non-commercial use",
        layout="meta.txt (audio/{name}.wav<TAB>scene), audio/, evaluation_setup/",
    ),
    Task(
        name="gtzan-ms",
        title="GTZAN M/S",
        kind="multiclass",
        reader=read_gtzan_ms,
        splits=(("all", 128),),
        class_names=tuple(GTZAN_MS_FOLDERS),
        paper=(("table1/HTSAT-22+GPT2", 1.0), ("table2/CLAP 2023", 0.992)),
        download="http://marsyas.info/downloads/datasets.html (music_speech.tar.gz)",
        license="none stated (research use; recordings keep their owners' copyright)",
        layout="music_wav/*.wav, speech_wav/*.wav",
    ),
    Task(
        name="gtzan-genres",
        title="Genres",
        kind="multiclass",
        reader=read_gtzan_genres,
        splits=(("all", 1000),),
        class_names=GTZAN_GENRES,
        label_text=genre_text,
        paper=(("table1/HTSAT-22+GPT2", 0.289), ("table2/CLAP 2023", 0.584)),
        download="http://marsyas.info/downloads/datasets.html (genres.tar.gz)",
        license="none stated (research use; recordings keep their owners' copyright)",
        layout="genres/{genre}/{genre}.000NN.au",
    ),
    Task(
        name="beijing-opera",
        title="BeijingOp",
        kind="multiclass",
        reader=read_beijing_opera,
        splits=(("all", 236),),
        class_names=BEIJING_CLASSES,
        paper=(("table1/HTSAT-22+GPT2", 0.487), ("table2/CLAP 2023", 0.466)),
        download="https://compmusic.upf.edu/bo-perc-dataset (Zenodo)",
        license="CC BY-NC-SA 4.0",
        layout="{bangu,daluo,naobo,xiaoluo}/*.wav",
    ),
)
