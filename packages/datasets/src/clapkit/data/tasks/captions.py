"""AudioCaps and Clotho test clips with their five captions, for retrieval and captioning."""

from __future__ import annotations

from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import CAPTION_METRICS, RETRIEVAL_METRICS, Task
from clapkit.data.tasks.layout import audio_files, keep_present, read_table, record, require

Read = tuple[list[ManifestRecord], tuple[str, ...], list[str]]

AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
CLOTHO_COLUMNS = ("file_name", *(f"caption_{i}" for i in range(1, 6)))
CLOTHO_FILES = {"evaluation": "clotho_captions_evaluation.csv"}


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
    clips = {p.stem: p for p in audio_files(root, (".wav", ".flac", ".ogg", ".mp3", ".m4a"))}
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
        path = next((clips[s] for s in stems if s in clips), root / "audio" / f"{ytid}.wav")
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
    return present, (), warnings + _not_five(present, "AudioCaps")


def read_clotho(root: Path, split: str) -> Read:
    """Clotho: ``clotho_captions_evaluation.csv`` (``file_name,caption_1..caption_5``) and the
    clips in ``evaluation/``."""
    table = require(root, CLOTHO_FILES[split], "Clotho", str(CLOTHO_COLUMNS))
    folder = require(root, split, "Clotho", f"the {split} clips (*.wav)")
    records = []
    for _, row in read_table(table, CLOTHO_COLUMNS):
        texts = [row[c] for c in CLOTHO_COLUMNS[1:] if row[c]]
        records.append(record(root, folder / row["file_name"], captions=texts))
    return keep_present(records, "Clotho", False, []), (), _not_five(records, "Clotho")


# (download, license, layout) of each dataset.
AUDIOCAPS = (
    "https://github.com/cdjkim/audiocaps (dataset/test.csv; audio from YouTube)",
    "captions MIT; audio from YouTube",
    "test.csv + clips named by youtube_id anywhere below",
)
CLOTHO = (
    "https://zenodo.org/record/4783391 (Clotho v2.1)",
    "audio CC0 / CC BY / CC BY-NC (Freesound); captions Tampere University licence",
    "clotho_captions_evaluation.csv, evaluation/*.wav",
)


def _task(name: str, title: str, retrieval: bool, paper: tuple[tuple[str, float], ...]) -> Task:
    audiocaps = name.startswith("audiocaps")
    download, license, layout = AUDIOCAPS if audiocaps else CLOTHO
    return Task(
        name=name,
        title=title,
        kind="retrieval" if retrieval else "captioning",
        reader=read_audiocaps if audiocaps else read_clotho,
        splits=(("test", 975),) if audiocaps else (("evaluation", 1045),),
        templates=("{}",),
        metrics=RETRIEVAL_METRICS if retrieval else CAPTION_METRICS,
        paper=paper,
        missing_ok=audiocaps,
        download=download,
        license=license,
        layout=layout,
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
