"""Sound-event tasks: FSD50K, UrbanSound8K, DCASE2017 task 4, AudioSet eval, SESA.

AudioSet and DCASE2017 task 4 are lists of YouTube segments whose audio each user downloads;
clips absent from a download are counted in the warnings, not an error.
"""

from __future__ import annotations

import re
from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import SOUND_TEMPLATES, Task, TaskLayoutError
from clapkit.data.tasks.layout import (
    ClipIndex,
    as_int,
    audio_files,
    check_label,
    keep_present,
    read_table,
    record,
    require,
)

Read = tuple[list[ManifestRecord], tuple[str, ...], list[str]]

US8K_CLASSES = (
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
)  # fmt: skip
US8K_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
DCASE17_CLASSES = (
    "Train horn", "Air horn, truck horn", "Car alarm", "Reversing beeps", "Ambulance (siren)",
    "Police car (siren)", "Fire engine, fire truck (siren)", "Civil defense siren", "Screaming",
    "Bicycle", "Skateboard", "Car", "Car passing by", "Bus", "Truck", "Motorcycle", "Train",
)  # fmt: skip
DCASE17_FILES = {
    "testing": "groundtruth_weak_label_testing_set.csv",
    "evaluation": "groundtruth_weak_label_evaluation_set.csv",
}
SESA_CLASSES = ("casual", "gunshot", "explosion", "siren")  # the readme's numbers 0-3
SESA_NAME = re.compile(rf"^({'|'.join(SESA_CLASSES)})", re.IGNORECASE)


def read_fsd50k(root: Path, split: str) -> Read:
    """FSD50K eval: ``FSD50K.ground_truth/{eval.csv,vocabulary.csv}``, ``FSD50K.eval_audio/``."""
    truth = require(root, "FSD50K.ground_truth", "FSD50K", "eval.csv and vocabulary.csv")
    audio = require(root, "FSD50K.eval_audio", "FSD50K", "the 10,231 eval clips {fname}.wav")
    vocabulary = read_table(truth / "vocabulary.csv", ("index", "label", "mid"), header=False)
    classes = tuple(row["label"] for _, row in vocabulary)
    if len(classes) != 200:
        raise TaskLayoutError(f"{truth / 'vocabulary.csv'}: {len(classes)} classes, expected 200")
    records = []
    table = truth / "eval.csv"
    for number, row in read_table(table, ("fname", "labels", "mids")):
        labels = tuple(row["labels"].split(","))
        for label in labels:
            check_label(label, classes, f"{table}:{number}")
        records.append(record(root, audio / f"{row['fname']}.wav", labels=labels))
    warnings: list[str] = []
    return keep_present(records, "FSD50K", False, warnings), classes, warnings


def read_us8k(root: Path, split: str) -> Read:
    """UrbanSound8K, all ten folds: ``metadata/UrbanSound8K.csv``, ``audio/fold{k}/``."""
    table = require(root, "metadata/UrbanSound8K.csv", "UrbanSound8K", str(US8K_COLUMNS))
    records = []
    for number, row in read_table(table, US8K_COLUMNS):
        where = f"{table}:{number}"
        class_id = as_int(row["classID"], where, "classID")
        if not 0 <= class_id < 10 or US8K_CLASSES[class_id] != row["class"]:
            raise TaskLayoutError(
                f"{where}: classID {class_id} with class {row['class']!r}; UrbanSound8K has "
                f"classID -> class {dict(enumerate(US8K_CLASSES))}"
            )
        fold = as_int(row["fold"], where, "fold")
        path = root / "audio" / f"fold{fold}" / row["slice_file_name"]
        records.append(record(root, path, labels=(row["class"],), fold=fold))
    warnings: list[str] = []
    return keep_present(records, "UrbanSound8K", False, warnings), US8K_CLASSES, warnings


def read_dcase17(root: Path, split: str) -> Read:
    """DCASE2017 task 4 weak labels: one TSV line ``file  start  end  label`` per label.

    The file column is ``{ytid}_{start}_{end}.wav`` (or the bare YouTube id, then the name is
    built from the times); the clip may sit anywhere under ``root``, with or without the
    ``Y`` prefix that the challenge's download script adds.
    """
    name = DCASE17_FILES[split]
    table = require(root, name, "DCASE2017 task 4", "the weak-label ground truth (tab-separated)")
    clips = ClipIndex(root)
    labels: dict[str, list[str]] = {}
    for number, row in read_table(table, ("file", "start", "end", "label"), delimiter="\t",
                                  header=False):  # fmt: skip
        # YouTube ids may hold "_", so only the suffix tells a file name from a bare id.
        stem = row["file"].removesuffix(".wav")
        if not row["file"].endswith(".wav"):
            stem = f"{stem}_{row['start']}_{row['end']}"
        label = check_label(row["label"], DCASE17_CLASSES, f"{table}:{number}")
        labels.setdefault(stem, [])
        if label not in labels[stem]:
            labels[stem].append(label)
    records = []
    for stem, clip_labels in labels.items():
        path = clips.find((stem, "Y" + stem), "DCASE2017 task 4") or root / "audio" / f"{stem}.wav"
        records.append(record(root, path, labels=clip_labels, ytid=stem.rsplit("_", 2)[0]))
    warnings: list[str] = []
    return keep_present(records, "DCASE2017 task 4", True, warnings), DCASE17_CLASSES, warnings


def read_audioset(root: Path, split: str) -> Read:
    """AudioSet eval: ``eval_segments.csv``, ``class_labels_indices.csv`` and the clips.

    A segment's clip is found under ``root`` by its stem: ``{YTID}``, ``Y{YTID}``,
    ``{YTID}_{start}`` or ``{YTID}_{start}_{end}`` (times as the CSV prints them, or whole
    seconds). Labels are the classes' display names; the MIDs stay in ``extra["mids"]``.
    """
    index_file = require(root, "class_labels_indices.csv", "AudioSet", "index,mid,display_name")
    segments = require(root, "eval_segments.csv", "AudioSet", "YTID, start, end, positive_labels")
    names = {row["mid"]: row["display_name"] for _, row in read_table(
        index_file, ("index", "mid", "display_name"))}  # fmt: skip
    classes = tuple(names.values())
    if len(set(classes)) != len(classes):
        raise TaskLayoutError(f"{index_file}: display names repeat")
    clips = ClipIndex(root)
    columns = ("YTID", "start_seconds", "end_seconds", "positive_labels")
    records = []
    for number, row in read_table(segments, columns, header=False, comment="#"):
        ytid, start, end = row["YTID"], row["start_seconds"], row["end_seconds"]
        mids = row["positive_labels"].split(",")
        unknown = [m for m in mids if m not in names]
        if unknown:
            raise TaskLayoutError(f"{segments}:{number}: MIDs {unknown} not in {index_file}")
        whole = (str(int(float(start))), str(int(float(end))))
        stems = (ytid, "Y" + ytid, f"{ytid}_{start}", f"{ytid}_{start}_{end}",
                 f"{ytid}_{whole[0]}", f"{ytid}_{whole[0]}_{whole[1]}")  # fmt: skip
        path = clips.find(stems, "AudioSet") or root / "audio" / f"{ytid}.wav"
        records.append(record(root, path, labels=[names[m] for m in mids], mids=mids, ytid=ytid))
    warnings: list[str] = []
    return keep_present(records, "AudioSet", True, warnings), classes, warnings


def _sesa_class(path: Path, folder: Path) -> str | None:
    """A SESA clip's class: a class folder above it (its name or its readme number), else
    the start of its file name."""
    for part in reversed(path.relative_to(folder).parent.parts):
        name = part.lower()
        if name in SESA_CLASSES:
            return name
        if name.isdigit() and int(name) < len(SESA_CLASSES):
            return SESA_CLASSES[int(name)]
    match = SESA_NAME.match(path.stem)
    return match.group(1).lower() if match else None


def read_sesa(root: Path, split: str) -> Read:
    """SESA test set: the clips under ``test/``, each with its class in its folder or name.

    The publisher's readme (Zenodo record 3519845) confirms the four classes, numbered 0 casual,
    1 gunshot, 2 explosion, 3 siren, and the ``train`` (480 files) / ``test`` (105 files)
    folders; it does not say where a clip's class is written. The reader takes a class folder
    above the clip (``test/gunshot/`` or ``test/1/``), else a file name starting with the class
    (``gunshot_012.wav``), and names any clip with neither.
    """
    folder = require(root, "test", "SESA", "the 105 test clips")
    records = []
    for path in audio_files(folder):
        label = _sesa_class(path, folder)
        if label is None:
            raise TaskLayoutError(
                f"{path}: no class in its folder or name; expected a folder named one of "
                f"{list(SESA_CLASSES)} (or 0-3) or a name starting with one"
            )
        records.append(record(root, path, labels=(label,)))
    return records, SESA_CLASSES, []


SOUND_EVENT_TASKS = (
    Task(
        name="fsd50k",
        title="FSD50K",
        kind="multilabel",
        reader=read_fsd50k,
        splits=(("eval", 10231),),
        templates=SOUND_TEMPLATES,
        metrics=("mAP",),
        paper=(("table1/HTSAT-22+GPT2", 0.403), ("table2/CLAP 2023", 0.485)),
        download="https://zenodo.org/record/4060432",
        license="CC BY 4.0 (clips CC0 / CC BY / CC BY-NC)",
        layout="FSD50K.eval_audio/{fname}.wav, FSD50K.ground_truth/{eval,vocabulary}.csv",
        checked="Zenodo 4060432: FSD50K.ground_truth/eval.csv, vocabulary.csv",
    ),
    Task(
        name="us8k",
        title="US8K",
        kind="multiclass",
        reader=read_us8k,
        splits=(("all-folds", 8732),),
        class_names=US8K_CLASSES,
        paper=(("table1/HTSAT-22+GPT2", 0.750), ("table2/CLAP 2023", 0.823)),
        download="https://urbansounddataset.weebly.com/urbansound8k.html",
        license="CC BY-NC 3.0",
        layout="audio/fold{1..10}/*.wav, metadata/UrbanSound8K.csv",
        checked="UrbanSound8K.tar.gz: metadata/UrbanSound8K.csv",
    ),
    Task(
        name="dcase17-t4",
        title="DCASE17",
        kind="multilabel",
        reader=read_dcase17,
        splits=(("testing", 488), ("evaluation", 1103)),
        class_names=DCASE17_CLASSES,
        # The paper does not define its F1. 108 of the 488 testing clips carry 2+ labels (606
        # labels; counted on the published file), so top-1 predictions cap recall at .805
        # whatever the model; zero-shot scores have no calibrated threshold
        # (the challenge's own rule). "F1" predicts each clip's top k classes, k its label
        # count (micro F1, the challenge's instance-based averaging); "F1@top1" is the top-1
        # rule: clapkit.core.metrics.f1_score(top_k="labels" or 1).
        metrics=("F1", "F1@top1"),
        paper=(("table1/HTSAT-22+GPT2", 0.337), ("table2/CLAP 2023", 0.466)),
        missing_ok=True,
        download="https://dcase.community/challenge2017/task-large-scale-sound-event-detection",
        license="labels CC BY 4.0 (AudioSet); audio from YouTube",
        layout="groundtruth_weak_label_{testing,evaluation}_set.csv + the clips anywhere below",
        checked="DCASE2017 task 4: groundtruth_weak_label_testing_set.csv",
    ),
    Task(
        name="audioset",
        title="AudioSet",
        kind="multilabel",
        reader=read_audioset,
        splits=(("eval", 20371),),
        metrics=("mAP",),
        paper=(("table2/CLAP 2023", 0.102),),
        missing_ok=True,
        download="https://research.google.com/audioset/download.html",
        license="labels CC BY 4.0; audio from YouTube",
        layout="eval_segments.csv, class_labels_indices.csv + clips named by YTID anywhere below",
        checked="AudioSet: eval_segments.csv, class_labels_indices.csv",
    ),
    Task(
        name="sesa",
        title="SESA",
        kind="multiclass",
        reader=read_sesa,
        splits=(("test", 105),),
        class_names=SESA_CLASSES,
        chance=0.25,
        paper=(("table1/HTSAT-22+GPT2", 0.762), ("table2/CLAP 2023", 0.650)),
        download="https://zenodo.org/record/3519845",
        license="CC BY 4.0 (Freesound clips)",
        layout="test/ with the class in a folder (name or 0-3) or at the start of the file name",
        checked=(
            "Zenodo 3519845: "
            "the readme (classes 0-3, train/ and test/; where labels are written is not stated)"
        ),
    ),
)
