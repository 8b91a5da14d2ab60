"""Multi-task manifests: reading (errors by file and line), builders, loading, weighted sampling."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from clapkit.audio import FrontendConfig
from clapkit.data import (
    ManifestError,
    ManifestRecord,
    MultiTaskCollator,
    MultiTaskDataset,
    MultiTaskRecord,
    WeightedTaskSampler,
    caption_records,
    classification_records,
    qa_records,
    read_multitask_manifest,
    task_records,
    write_multitask_manifest,
)
from clapkit.data.tasks import TaskData, get_task

FRONTEND = FrontendConfig(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=32, fmin=50.0,
    fmax=4000.0, clip_seconds=0.5,
)  # fmt: skip


def test_round_trip_keeps_relative_paths_and_extra_fields(
    tmp_path: Path, clip_folder: Path
) -> None:
    clip = clip_folder / "3_theo_0.flac"
    records = [
        MultiTaskRecord(clip, "digit", "which digit", "three", "a", {"speaker": "theo"}),
        MultiTaskRecord(clip, "speaker", "who", "theo", "b"),
    ]
    path = write_multitask_manifest(records, tmp_path / "m" / "train.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        "audio": "../clips/3_theo_0.flac", "task": "digit", "prompt": "which digit",
        "answer": "three", "key": "a", "speaker": "theo",
    }  # fmt: skip
    back = read_multitask_manifest(path)
    assert [r.audio.resolve() for r in back] == [clip.resolve()] * 2
    assert back[0].extra == {"speaker": "theo"}
    assert (back[1].task, back[1].prompt, back[1].answer, back[1].key) == (
        "speaker", "who", "theo", "b",
    )  # fmt: skip
    with pytest.raises(ValueError, match="share the key 'a'"):
        write_multitask_manifest([records[0], records[0]], tmp_path / "dup.jsonl")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected a JSON object, got list"),
        (
            '{"audio": "a.wav", "task": "t", "prompt": "p"}',
            r"'answer' must be a string \(missing\)",
        ),
        ('{"audio": "a.wav", "task": "t", "prompt": 3, "answer": "x"}', "'prompt' must be a str"),
        ('{"audio": "a.wav", "task": " ", "prompt": "", "answer": "x"}', "'task' is empty"),
        ('{"audio": "a.wav", "task": "t", "prompt": "", "answer": "y"}', "key 't/a' repeats"),
    ],
)
def test_bad_lines_are_named_by_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"audio": "a.wav", "task": "t", "prompt": "", "answer": "x"}'
    path.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(ManifestError, match=message) as error:
        read_multitask_manifest(path)
    assert f"{path}:3:" in str(error.value)


def test_empty_or_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_multitask_manifest(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="no record"):
        read_multitask_manifest(tmp_path / "empty.jsonl")


def test_builders_turn_labels_captions_and_questions_into_answers() -> None:
    clip = Path("/data/a.wav")
    labelled = [ManifestRecord(clip, labels=("Dog", "sea_waves"), key="a")]
    records = classification_records(
        labelled, task="fsd", prompt="this is a sound of", label_text=lambda s: s.lower()
    )
    assert records == [
        MultiTaskRecord(clip, "fsd", "this is a sound of", "dog, sea_waves", "fsd/a")
    ]
    captioned = [ManifestRecord(clip, captions=("a dog barks", "barking"), key="a")]
    captions = caption_records(captioned, task="clotho")
    assert [(r.prompt, r.answer, r.key) for r in captions] == [
        ("generate audio caption", "a dog barks", "clotho/a#0"),
        ("generate audio caption", "barking", "clotho/a#1"),
    ]
    assert len(caption_records(captioned, task="c", every_caption=False)) == 1
    pairs = [
        ManifestRecord(clip, key="a", extra={"question": "is it a dog?", "answer": "yes"}),
        ManifestRecord(clip, key="a", extra={"question": "how many?", "answer": "one"}),
    ]
    qa = qa_records(pairs, task="aqa")
    assert [(r.prompt, r.answer, r.key) for r in qa] == [
        ("question: is it a dog?", "yes", "aqa/a#0"),
        ("question: how many?", "one", "aqa/a#1"),
    ]
    with pytest.raises(ValueError, match="fsd: clip b has no label"):
        classification_records([ManifestRecord(clip, key="b")], task="fsd", prompt="")
    with pytest.raises(ValueError, match="clotho: clip b has no caption"):
        caption_records([ManifestRecord(clip, key="b")], task="clotho")
    with pytest.raises(ValueError, match="aqa: clip b needs string fields 'question'"):
        qa_records([ManifestRecord(clip, key="b", extra={"question": "q"})], task="aqa")


def test_task_records_use_the_tasks_own_class_text() -> None:
    esc50 = get_task("esc50")
    clip = ManifestRecord(Path("/esc/1-1-A-11.wav"), labels=("sea_waves",), key="1-1-A-11")
    data = TaskData(esc50, "all-folds", Path("/esc"), (clip,), esc50.class_names or ())
    (record,) = task_records(data, prompt="this is a sound of")
    assert (record.task, record.answer) == ("esc50", "sea waves")
    clotho = get_task("clotho-caption")
    captioned = ManifestRecord(Path("/c/x.wav"), captions=("wind", "a gust"), key="x")
    caps = task_records(TaskData(clotho, "evaluation", Path("/c"), (captioned,)), prompt="cap")
    assert [r.answer for r in caps] == ["wind", "a gust"]


def test_dataset_loads_crops_and_collates(clip_folder: Path) -> None:
    clips = sorted(clip_folder.glob("*.flac"))[:3]
    records = [MultiTaskRecord(c, "digit", "which digit", c.name[0], c.stem) for c in clips]
    records.append(MultiTaskRecord(clip_folder / "missing.flac", "digit", "which digit", "x", "m"))
    data = MultiTaskDataset(records, FRONTEND, train=True, seed=0)
    assert data.tasks() == ["digit"] * 4
    batch = MultiTaskCollator()([data[i] for i in range(4)])
    assert batch["waveform"].shape == (3, 4000)
    assert batch["answers"] == [c.name[0] for c in clips]
    assert batch["prompts"] == ["which digit"] * 3
    assert [s.key for s in batch["skipped"]] == ["m"]
    # crops are a function of (seed, epoch, index)
    assert torch.equal(data[0]["waveform"], data[0]["waveform"])  # type: ignore[index]
    again = MultiTaskDataset(records, FRONTEND, train=True, seed=0)
    assert torch.equal(data[1]["waveform"], again[1]["waveform"])  # type: ignore[index]


def test_dataset_decodes_only_the_crop_whole_clip_decoding_would_cut(clip_folder: Path) -> None:
    from clapkit.audio import load_audio
    from clapkit.data.dataset import ClipLoader, item_generator

    clips = sorted(clip_folder.glob("*.flac"))
    records = [MultiTaskRecord(c, "digit", "which digit", c.name[0], c.stem) for c in clips]
    data = MultiTaskDataset(records, FRONTEND, train=True, seed=3)
    data.set_epoch(2)
    whole = ClipLoader(FRONTEND, train=True)
    longer = 0
    for index, clip in enumerate(clips):
        expected = whole.crop(load_audio(clip, 8000), item_generator(3, 2, index))
        got = data[index]["waveform"]  # type: ignore[index]
        assert torch.equal(got, expected), clip.name
        assert got.untyped_storage().nbytes() == 4000 * 4  # the crop alone is kept
        longer += load_audio(clip, 8000).shape[0] > 4000
    assert 0 < longer < len(clips)  # both cases: a crop cut from a longer clip, a filled one


def test_sampler_gives_each_task_its_weighted_share() -> None:
    tasks = ["big"] * 90 + ["small"] * 10
    plain = Counter(tasks[i] for i in WeightedTaskSampler(tasks, num_samples=4000, seed=0))
    assert 0.87 < plain["big"] / 4000 < 0.93  # default: shares follow the task sizes
    sampler = WeightedTaskSampler(tasks, {"big": 1.0, "small": 1.0}, num_samples=4000, seed=0)
    drawn = list(sampler)
    share = Counter(tasks[i] for i in drawn)
    assert 0.46 < share["small"] / 4000 < 0.54
    # within a task every item comes once before any repeats
    small = [i for i in drawn if tasks[i] == "small"]
    assert sorted(small[:10]) == list(range(90, 100))
    only = WeightedTaskSampler(tasks, {"big": 0.0, "small": 1.0}, seed=0)
    assert len(only) == 100
    assert {tasks[i] for i in only} == {"small"}


def test_sampler_order_is_seeded_by_seed_and_epoch() -> None:
    tasks = ["a"] * 7 + ["b"] * 5
    first = WeightedTaskSampler(tasks, {"a": 1.0, "b": 2.0}, seed=3)
    second = WeightedTaskSampler(tasks, {"a": 1.0, "b": 2.0}, seed=3)
    assert list(first) == list(second)  # a resumed run redraws the same order
    first.set_epoch(1)
    epoch1 = list(first)
    assert epoch1 != list(second)
    second.set_epoch(1)
    assert list(second) == epoch1
    assert list(WeightedTaskSampler(tasks, {"a": 1.0, "b": 2.0}, seed=4)) != list(second)


def test_bad_weights_are_named() -> None:
    with pytest.raises(ValueError, match=r"no item for \['c'\], no weight for \['b'\]"):
        WeightedTaskSampler(["a", "b"], {"a": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match="must be >= 0 and not all 0"):
        WeightedTaskSampler(["a"], {"a": 0.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        WeightedTaskSampler(["a", "b"], {"a": 1.0, "b": -1.0})
    with pytest.raises(ValueError, match="no items"):
        WeightedTaskSampler([])
