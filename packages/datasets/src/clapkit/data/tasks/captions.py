"""AudioCaps and Clotho clips with their captions: the test splits (five captions a clip) for
retrieval and captioning, and the training splits the paper trains the captioner's mapper on.

AudioCaps (github.com/cdjkim/audiocaps, ``dataset/``): ``train.csv`` (one caption a clip),
``val.csv`` and ``test.csv`` (five), each with the header ``audiocap_id,youtube_id,start_time,
caption``. Clotho v2.1 (Zenodo record 4783391): ``clotho_captions_{development,validation,
evaluation}.csv`` with the header ``file_name,caption_1,...,caption_5`` and the clips of each
split in the folder of its name (``development/``, ...), as the ``clotho_audio_*.7z`` archives
unpack.
"""

from __future__ import annotations

from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import CAPTION_METRICS, RETRIEVAL_METRICS, Task
from clapkit.data.tasks.layout import ClipIndex, keep_present, read_table, record, require

Read = tuple[list[ManifestRecord], tuple[str, ...], list[str]]

AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
CLOTHO_COLUMNS = ("file_name", *(f"caption_{i}" for i in range(1, 6)))
# the splits whose clips carry one caption each (AudioCaps' training split)
ONE_CAPTION_SPLITS = ("train",)


def _not_five(records: list[ManifestRecord], title: str) -> list[str]:
    odd = [r.key for r in records if len(r.captions) != 5]
    if not odd:
        return []
    return [f"{title}: {len(odd)} clips do not have 5 captions, e.g. {odd[:3]}"]


def read_audiocaps(root: Path, split: str) -> Read:
    """AudioCaps test: ``test.csv`` (``audiocap_id,youtube_id,start_time,caption``, one row per
    caption) and the clips the user downloaded, anywhere under ``root``, named
    ``{youtube_id}``, ``Y{youtube_id}``, ``{youtube_id}_{start_time}`` or
    ``{youtube_id}_{start_time}_{start_time + 10}``."""
    table = require(root, f"{split}.csv", "AudioCaps", str(AUDIOCAPS_COLUMNS))
    clips = ClipIndex(root)
    captions: dict[tuple[str, str], list[str]] = {}
    ids: dict[tuple[str, str], list[str]] = {}
    for _, row in read_table(table, AUDIOCAPS_COLUMNS):
        segment = (row["youtube_id"], row["start_time"])
        captions.setdefault(segment, []).append(row["caption"])
        ids.setdefault(segment, []).append(row["audiocap_id"])
    records = []
    for (ytid, start), texts in captions.items():
        end = str(int(float(start)) + 10)
        stems = (ytid, "Y" + ytid, f"{ytid}_{start}", f"{ytid}_{start}_{end}")
        path = clips.find(stems, "AudioCaps") or root / "audio" / f"{ytid}.wav"
        clip = record(root, path, captions=texts, youtube_id=ytid, start_time=start)
        records.append(
            ManifestRecord(
                clip.audio,
                captions=clip.captions,
                key=f"{ytid}_{start}",
                extra={**clip.extra, "audiocap_ids": ids[(ytid, start)]},
            )
        )
    warnings: list[str] = []
    present = keep_present(records, "AudioCaps", True, warnings)
    if split not in ONE_CAPTION_SPLITS:
        warnings += _not_five(present, "AudioCaps")
    return present, (), warnings


def read_clotho(root: Path, split: str) -> Read:
    """Clotho: ``clotho_captions_{split}.csv`` (``file_name,caption_1..caption_5``) and the
    clips in ``{split}/`` (``evaluation``, ``development`` or ``validation``)."""
    table = require(root, f"clotho_captions_{split}.csv", "Clotho", str(CLOTHO_COLUMNS))
    folder = require(root, split, "Clotho", f"the {split} clips (*.wav)")
    records = []
    for _, row in read_table(table, CLOTHO_COLUMNS):
        texts = [row[c] for c in CLOTHO_COLUMNS[1:] if row[c]]
        records.append(record(root, folder / row["file_name"], captions=texts))
    return keep_present(records, "Clotho", False, []), (), _not_five(records, "Clotho")


# (download, license, layout, checked) of each dataset.
AUDIOCAPS = (
    "https://github.com/cdjkim/audiocaps (dataset/{train,val,test}.csv; audio from YouTube)",
    "captions MIT; audio from YouTube",
    "{test,val,train}.csv + clips named by youtube_id anywhere below",
    "github.com/cdjkim/audiocaps: dataset/train.csv, val.csv, test.csv",
)
CLOTHO = (
    "https://zenodo.org/record/4783391 (Clotho v2.1)",
    "audio CC0 / CC BY / CC BY-NC (Freesound); captions Tampere University licence",
    "clotho_captions_{split}.csv, {split}/*.wav (evaluation, development, validation)",
    "Zenodo 4783391: clotho_captions_{development,evaluation}.csv headers, file names",
)
# Published clip counts: AudioCaps v1 49,838 / 495 / 975, Clotho v2.1 3,839 / 1,045 / 1,045.
AUDIOCAPS_SPLITS = (("test", 975), ("val", 495), ("train", 49838))
CLOTHO_SPLIT_COUNTS = (("evaluation", 1045), ("development", 3839), ("validation", 1045))


def _task(name: str, title: str, retrieval: bool, paper: tuple[tuple[str, float], ...]) -> Task:
    audiocaps = name.startswith("audiocaps")
    download, license, layout, checked = AUDIOCAPS if audiocaps else CLOTHO
    return Task(
        name=name,
        title=title,
        kind="retrieval" if retrieval else "captioning",
        reader=read_audiocaps if audiocaps else read_clotho,
        splits=AUDIOCAPS_SPLITS if audiocaps else CLOTHO_SPLIT_COUNTS,
        train_split="train" if audiocaps else "development",
        templates=("{}",),
        metrics=RETRIEVAL_METRICS if retrieval else CAPTION_METRICS,
        paper=paper,
        missing_ok=audiocaps,
        download=download,
        license=license,
        layout=layout,
        checked=checked,
    )


CAPTION_TASKS = (
    _task("audiocaps", "AudioCaps", True, (
        ("table2/CLAP 2023 a2t/R@1", 0.425), ("table2/CLAP 2023 a2t/mAP@10", 0.319),
        ("table2/CLAP 2023 t2a/R@1", 0.356), ("table2/CLAP 2023 t2a/mAP@10", 0.51),
    )),
    _task("clotho", "Clotho", True, (
        ("table2/CLAP 2023 a2t/R@1", 0.229), ("table2/CLAP 2023 a2t/mAP@10", 0.155),
        ("table2/CLAP 2023 t2a/R@1", 0.157), ("table2/CLAP 2023 t2a/mAP@10", 0.257),
    )),
    _task("audiocaps-caption", "AudioCaps captioning", False, (("table2/CLAP 2023", 0.455),)),
    _task("clotho-caption", "Clotho captioning", False, (("table2/CLAP 2023", 0.271),)),
)  # fmt: skip
