"""Acoustic scenes and music: TUT2017 scenes, GTZAN music/speech and genres, Beijing Opera."""

from __future__ import annotations

import re
from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import (
    SOUND_TEMPLATES,
    Task,
    TaskFileNotFoundError,
    TaskLayoutError,
    humanize,
)
from clapkit.data.tasks.layout import (
    audio_files,
    check_label,
    keep_present,
    read_table,
    record,
    require,
)

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
# Zenodo 1285212's flat folder: "205972__ajaysm__daluo-01.wav"
BEIJING_NAME = re.compile(r"^\d+__.+__([a-z]+)-\d+\.wav$", re.IGNORECASE)


def scene_text(label: str) -> str:
    """``"cafe/restaurant"`` -> ``"cafe or restaurant"``, ``"city_center"`` -> ``"city center"``."""
    return humanize(label.replace("/", " or "))


def genre_text(label: str) -> str:
    """``"hiphop"`` -> ``"hip hop"``; the other GTZAN genres are already words."""
    return "hip hop" if label == "hiphop" else humanize(label)


def read_tut2017(root: Path, split: str) -> Read:
    """TUT Acoustic Scenes 2017: tab-separated lines ``audio/{name}.wav<TAB>{scene}[<TAB>id]``.

    ``root`` is ``TUT-acoustic-scenes-2017-development`` (split ``development``: ``meta.txt``,
    all four folds) or ``TUT-acoustic-scenes-2017-evaluation`` (split ``evaluation``). The
    evaluation set's metadata archive ships ``evaluation_setup/evaluate.txt`` (and ``test.txt``,
    file names only) and no ``meta.txt``: the organisers' baseline builds ``meta.txt`` from
    ``evaluate.txt`` when it is missing, so the reader takes ``meta.txt`` if present, else
    ``evaluate.txt``.
    """
    meta = root / "meta.txt"
    if not meta.is_file() and split == "evaluation":
        meta = root / "evaluation_setup" / "evaluate.txt"
    if not meta.is_file():
        also = " or evaluation_setup/evaluate.txt" if split == "evaluation" else ""
        raise TaskFileNotFoundError(
            f"TUT2017: {root / 'meta.txt'}{also} not found; expected tab-separated "
            "audio/{name}.wav, scene label lines"
        )
    records = []
    for number, row in read_table(meta, ("file", "scene"), delimiter="\t", header=False):
        scene = check_label(row["scene"], TUT17_CLASSES, f"{meta}:{number}")
        records.append(record(root, root / row["file"], labels=(scene,), split=split))
    warnings: list[str] = []
    return keep_present(records, "TUT2017", False, warnings), TUT17_CLASSES, warnings


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


def _instrument(path: Path, root: Path) -> str | None:
    """The instrument of a Beijing Opera clip: a class folder above it (any case), else the
    published file name ``{freesound id}__{user}__{instrument}-{nn}.wav``."""
    for folder in path.relative_to(root).parent.parts:
        if folder.lower() in BEIJING_CLASSES:
            return folder.lower()
    match = BEIJING_NAME.match(path.name)
    if match and match.group(1).lower() in BEIJING_CLASSES:
        return match.group(1).lower()
    return None


def read_beijing_opera(root: Path, split: str) -> Read:
    """Beijing Opera percussion: the published flat folder of ``{freesound id}__{user}__
    {instrument}-{nn}.wav`` (Zenodo record 1285212), or one folder of wav per instrument."""
    records = []
    for path in audio_files(root):
        label = _instrument(path, root)
        if label is None:
            raise TaskLayoutError(
                f"{path}: no instrument in the name or folder; expected "
                f"{{freesound id}}__{{user}}__{{instrument}}-{{nn}}.wav or a folder named one of "
                f"{list(BEIJING_CLASSES)}"
            )
        records.append(record(root, path, labels=(label,)))
    if not records:
        raise TaskFileNotFoundError(
            f"Beijing Opera: no .wav under {root}; expected {{id}}__{{user}}__{{instrument}}-"
            f"{{nn}}.wav files (or folders {list(BEIJING_CLASSES)})"
        )
    found = {r.labels[0] for r in records}
    warnings = [
        f"Beijing Opera: no clip of {label!r} under {root}"
        for label in BEIJING_CLASSES
        if label not in found
    ]
    records.sort(key=lambda r: (BEIJING_CLASSES.index(r.labels[0]), r.key))
    return records, BEIJING_CLASSES, warnings


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
        layout="meta.txt or evaluation_setup/evaluate.txt (audio/{name}.wav<TAB>scene), audio/",
        checked=(
            "TUT-ARG/DCASE2017-baseline-system: "
            "dcase_framework/datasets.py (meta.txt; evaluation_setup/evaluate.txt)"
        ),
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
        checked="marsyas music_speech.tar.gz: music_wav/, speech_wav/",
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
        checked="marsyas genres.tar.gz: genres/{genre}/{genre}.000NN.au",
    ),
    Task(
        name="beijing-opera",
        title="BeijingOp",
        kind="multiclass",
        reader=read_beijing_opera,
        splits=(("all", 236),),
        class_names=BEIJING_CLASSES,
        paper=(("table1/HTSAT-22+GPT2", 0.487), ("table2/CLAP 2023", 0.466)),
        download="https://zenodo.org/record/1285212 (beijing_opera_percussion_instrument_1.0.zip)",
        license="CC BY-NC-SA 4.0",
        layout="{freesound id}__{user}__{instrument}-{nn}.wav (flat) or {instrument}/*.wav",
        checked="Zenodo 1285212: beijing_opera_percussion_instrument_1.0.zip file names",
    ),
)
