"""Speech and voice tasks: VocalSound, CREMA-D, RAVDESS, Speech Commands v2, LibriCount10."""

from __future__ import annotations

import re
from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import (
    COUNT_TEMPLATES,
    EMOTION_TEMPLATES,
    KEYWORD_TEMPLATES,
    Task,
    TaskLayoutError,
)
from clapkit.data.tasks.layout import (
    audio_files,
    check_label,
    keep_present,
    read_json,
    record,
    require,
)

Read = tuple[list[ManifestRecord], tuple[str, ...], list[str]]

# VocalSound's class_labels_indices_vs.csv borrows AudioSet MIDs.
VOCALSOUND_MIDS = {
    "/m/01j3sz": "laughter", "/m/07plz5l": "sigh", "/m/01b_21": "cough",
    "/m/0dl9sf8": "throatclearing", "/m/01hsr_": "sneeze", "/m/07ppn3j": "sniff",
}  # fmt: skip
VOCALSOUND_CLASSES = tuple(VOCALSOUND_MIDS.values())
CREMA_EMOTIONS = {
    "ANG": "angry", "DIS": "disgusted", "FEA": "fearful", "HAP": "happy", "NEU": "neutral",
    "SAD": "sad",
}  # fmt: skip
RAVDESS_EMOTIONS = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)  # fmt: skip
RAVDESS_CHANNELS = {"speech": ("01",), "song": ("02",), "speech+song": ("01", "02")}
SPEECH_COMMANDS_35 = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one",
    "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow",
    "yes", "zero",
)  # fmt: skip
SPEECH_COMMANDS_12 = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_",
    "_silence_",
)  # fmt: skip
COUNTS = tuple(str(n) for n in range(11))


def read_vocalsound(root: Path, split: str) -> Read:
    """VocalSound test: ``datafiles/te.json`` (``{"data": [{"wav", "labels"}]}``) whose clips
    are ``audio_16k/{speaker}_{n}_{label}.wav``; JSON paths are matched by file name."""
    meta = root / "datafiles" / "te.json"
    data = read_json(meta, '{"data": [{"wav": ".../audio_16k/x.wav", "labels": "/m/..."}]}')
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TaskLayoutError(f"{meta}: expected an object with a 'data' list")
    audio = require(root, "audio_16k", "VocalSound", "the 16 kHz clips {spk}_{n}_{label}.wav")
    records = []
    for number, item in enumerate(data["data"]):
        where = f"{meta}: data[{number}]"
        if not isinstance(item, dict) or not isinstance(item.get("wav"), str):
            raise TaskLayoutError(f"{where}: expected an object with a 'wav' path")
        name = Path(item["wav"]).name
        label = check_label(Path(name).stem.rsplit("_", 1)[-1], VOCALSOUND_CLASSES, where)
        mid = item.get("labels")
        if mid in VOCALSOUND_MIDS and VOCALSOUND_MIDS[mid] != label:
            raise TaskLayoutError(f"{where}: labels {mid!r} contradicts the file name {name}")
        records.append(record(root, audio / name, labels=(label,)))
    warnings: list[str] = []
    return keep_present(records, "VocalSound", False, warnings), VOCALSOUND_CLASSES, warnings


def read_crema_d(root: Path, split: str) -> Read:
    """CREMA-D: ``AudioWAV/{actor}_{sentence}_{EMO}_{level}.wav``, every clip."""
    folder = require(root, "AudioWAV", "CREMA-D", "{actor}_{sentence}_{EMO}_{level}.wav files")
    records = []
    for path in audio_files(folder):
        parts = path.stem.split("_")
        if len(parts) != 4 or parts[2] not in CREMA_EMOTIONS:
            raise TaskLayoutError(
                f"{path}: expected {{actor}}_{{sentence}}_{{EMO}}_{{level}}.wav with EMO in "
                f"{list(CREMA_EMOTIONS)}"
            )
        records.append(record(root, path, labels=(parts[2],), actor=parts[0]))
    return records, tuple(CREMA_EMOTIONS), []


def read_ravdess(root: Path, split: str) -> Read:
    """RAVDESS audio: ``Actor_XX/MM-VC-EE-II-SS-RR-AA.wav`` (EE the emotion, 01-08)."""
    channels = RAVDESS_CHANNELS[split]
    records = []
    actors = sorted(p for p in root.glob("Actor_*") if p.is_dir())
    if not actors:
        raise TaskLayoutError(f"RAVDESS: no Actor_XX folder under {root}")
    for actor in actors:
        for path in audio_files(actor):
            fields = path.stem.split("-")
            if len(fields) != 7 or not all(f.isdigit() for f in fields):
                raise TaskLayoutError(f"{path}: expected MM-VC-EE-II-SS-RR-AA.wav (7 numbers)")
            emotion = int(fields[2])
            if fields[0] != "03" or not 1 <= emotion <= 8 or actor.name != f"Actor_{fields[6]}":
                raise TaskLayoutError(
                    f"{path}: expected modality 03 (audio), emotion 01-08 and actor "
                    f"{actor.name.removeprefix('Actor_')}"
                )
            if fields[1] in channels:
                label = RAVDESS_EMOTIONS[emotion - 1]
                records.append(record(root, path, labels=(label,), actor=int(fields[6])))
    return records, RAVDESS_EMOTIONS, []


def read_speech_commands(root: Path, split: str) -> Read:
    """Speech Commands v0.02 (the paper's split first).

    ``test-12`` (default): the separate 12-class test set ``speech_commands_test_set_v0.02``,
    folders ``{word}/``, ``_unknown_/``, ``_silence_/``. The paper takes this task from HEAR,
    and HEAR's ``speech_commands`` test split is that archive with these 12 labels
    (hear-preprocess ``speech_commands.py``: the ten ``WORDS``, ``_unknown_``, ``_silence_``).
    ``test``: ``testing_list.txt`` over the 35 word folders of ``speech_commands_v0.02``.
    """
    if split == "test-12":
        records = []
        for word in SPEECH_COMMANDS_12:
            folder = require(root, word, "Speech Commands test set", f"the {word} clips")
            records += [record(root, p, labels=(word,)) for p in audio_files(folder)]
        return records, SPEECH_COMMANDS_12, []
    listing = require(root, "testing_list.txt", "Speech Commands", "lines {word}/{file}.wav")
    records = []
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        word, _, name = line.strip().partition("/")
        check_label(word, SPEECH_COMMANDS_35, f"{listing}:{number} ({line.strip()!r})")
        records.append(record(root, root / word / name, labels=(word,)))
    warnings: list[str] = []
    return keep_present(records, "Speech Commands", False, warnings), SPEECH_COMMANDS_35, warnings


def read_libricount(root: Path, split: str) -> Read:
    """LibriCount10 (0 dB): ``{count}_{id}.wav`` under ``root`` (the ``test/`` folder)."""
    pattern = re.compile(r"^(\d+)_")
    records = []
    for path in audio_files(root):
        match = pattern.match(path.name)
        if match is None or match.group(1) not in COUNTS:
            raise TaskLayoutError(f"{path}: expected {{count}}_{{id}}.wav with count 0-10")
        records.append(record(root, path, labels=(match.group(1),)))
    return records, COUNTS, []


def keyword_text(label: str) -> str:
    """``"_unknown_"`` -> ``"unknown"``; a word stays itself."""
    return label.strip("_")


SPEECH_TASKS = (
    Task(
        name="vocalsound",
        title="VocalSound",
        kind="multiclass",
        reader=read_vocalsound,
        splits=(("test", 3594),),
        class_names=VOCALSOUND_CLASSES,
        label_text=lambda label: "throat clearing" if label == "throatclearing" else label,
        paper=(("table1/HTSAT-22+GPT2", 0.692), ("table2/CLAP 2023", 0.800)),
        download="https://github.com/YuanGongND/vocalsound (vocalsound_16k.zip)",
        license="CC BY-SA 4.0",
        layout="audio_16k/{spk}_{n}_{label}.wav, datafiles/te.json",
        checked="github.com/YuanGongND/vocalsound: datafiles/te.json, audio_16k/ file names",
    ),
    Task(
        name="crema-d",
        title="CREMA-D",
        kind="multiclass",
        reader=read_crema_d,
        splits=(("all", 7442),),
        class_names=tuple(CREMA_EMOTIONS),
        templates=EMOTION_TEMPLATES,
        label_text=lambda code: CREMA_EMOTIONS.get(code, code),
        paper=(("table1/HTSAT-22+GPT2", 0.297), ("table2/CLAP 2023", 0.300)),
        download="https://github.com/CheyneyComputerScience/CREMA-D",
        license="ODbL 1.0 (contents DbCL 1.0)",
        layout="AudioWAV/{actor}_{sentence}_{EMO}_{level}.wav",
        checked="github.com/CheyneyComputerScience/CREMA-D: AudioWAV/ file names (Git LFS)",
    ),
    Task(
        name="ravdess",
        title="RAVDESS",
        kind="multiclass",
        reader=read_ravdess,
        splits=(("speech", 1440), ("song", 1012), ("speech+song", 2452)),
        class_names=RAVDESS_EMOTIONS,
        templates=EMOTION_TEMPLATES,
        label_text=lambda label: "disgusted" if label == "disgust" else label,
        paper=(("table1/HTSAT-22+GPT2", 0.217), ("table2/CLAP 2023", 0.315)),
        download="https://zenodo.org/record/1188976 (Audio_Speech_Actors_01-24.zip)",
        license="CC BY-NC-SA 4.0",
        layout="Actor_XX/03-VC-EE-II-SS-RR-XX.wav",
        checked="Zenodo 1188976: Audio_Speech_Actors_01-24.zip file names",
    ),
    Task(
        name="speech-commands",
        title="SpeechCmd",
        kind="multiclass",
        reader=read_speech_commands,
        splits=(("test-12", 4890), ("test", 11005)),
        class_names=SPEECH_COMMANDS_12,
        templates=KEYWORD_TEMPLATES,
        label_text=keyword_text,
        paper=(("table1/HTSAT-22+GPT2", 0.089), ("table2/CLAP 2023", 0.164)),
        download=(
            "http://download.tensorflow.org/data/speech_commands_test_set_v0.02.tar.gz "
            "(test-12); speech_commands_v0.02.tar.gz (test)"
        ),
        license="CC BY 4.0",
        layout="test-12: {word,_unknown_,_silence_}/*.wav; test: {word}/*.wav, testing_list.txt",
        checked=(
            "hearbenchmark/hear-preprocess: "
            "hearpreprocess/speech_commands.py; speech_commands_v0.02 testing_list.txt"
        ),
    ),
    Task(
        name="libricount",
        title="LibriCount",
        kind="multiclass",
        reader=read_libricount,
        splits=(("all", 5720),),
        class_names=COUNTS,
        templates=COUNT_TEMPLATES,
        label_text=str,
        paper=(("table1/HTSAT-22+GPT2", 0.254), ("table2/CLAP 2023", 0.246)),
        download="https://zenodo.org/record/1216072 (LibriCount10-0dB)",
        license="CC BY 4.0",
        layout="{count}_{id}.wav (count 0-10)",
        checked="Zenodo 1216072: LibriCount10-0dB file names",
    ),
)
