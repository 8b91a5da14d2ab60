"""VocalSound, CREMA-D, RAVDESS, Speech Commands, LibriCount10, AudioCaps and Clotho layouts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clapkit.audio import FrontendConfig
from clapkit.data import ManifestDataset
from clapkit.data.tasks import TaskFileNotFoundError, TaskLayoutError, get_task

Writer = Callable[..., Path]


def test_vocalsound_test_json(tmp_path: Path, write_clip: Writer) -> None:
    # github.com/YuanGongND/vocalsound: datafiles/te.json {"data": [{"wav", "labels"}]} with
    # AudioSet MIDs, clips audio_16k/{speaker}_{n}_{label}.wav (names of that form)
    names = ["f0003_0_cough.wav", "m0083_1_throatclearing.wav", "f1234_2_laughter.wav"]
    mids = ["/m/01b_21", "/m/0dl9sf8", "/m/01j3sz"]
    for name in names:
        write_clip(tmp_path / "audio_16k" / name)
    data_json = {"data": [{"wav": f"/data/vocalsound/audio_16k/{n}", "labels": m}
                          for n, m in zip(names, mids, strict=True)]}  # fmt: skip
    (tmp_path / "datafiles").mkdir()
    (tmp_path / "datafiles" / "te.json").write_text(json.dumps(data_json))
    data = get_task("vocalsound").load(tmp_path)
    assert [r.labels for r in data.records] == [("cough",), ("throatclearing",), ("laughter",)]
    assert data.records[0].audio == tmp_path / "audio_16k" / names[0]
    assert data.prompts()[3] == ["this is a sound of throat clearing"]
    data_json["data"][0]["labels"] = "/m/01hsr_"
    (tmp_path / "datafiles" / "te.json").write_text(json.dumps(data_json))
    with pytest.raises(TaskLayoutError, match=r"data\[0\]: labels '/m/01hsr_' contradicts"):
        get_task("vocalsound").load(tmp_path)


def test_crema_d(tmp_path: Path, write_clip: Writer) -> None:
    # github.com/CheyneyComputerScience/CREMA-D: AudioWAV/{actor}_{sentence}_{EMO}_{level}.wav,
    # e.g. 1001_DFA_ANG_XX.wav as published
    for name in ("1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1091_WSI_SAD_LO.wav"):
        write_clip(tmp_path / "AudioWAV" / name)
    data = get_task("crema-d").load(tmp_path)
    assert data.targets().tolist() == [0, 3, 5]
    assert [r.extra["actor"] for r in data.records] == ["1001", "1001", "1091"]
    assert data.prompts()[0] == ["this person is feeling angry"]
    assert data.warnings == ("CREMA-D all: 3 clips found, 7442 published",)
    write_clip(tmp_path / "AudioWAV" / "1001_DFA_BORED_XX.wav")
    with pytest.raises(TaskLayoutError, match=r"BORED_XX\.wav: expected \{actor\}"):
        get_task("crema-d").load(tmp_path)


def test_git_lfs_pointer_is_named_with_the_fix(tmp_path: Path, write_clip: Writer) -> None:
    # CheyneyComputerScience/CREMA-D keeps AudioWAV/*.wav in Git LFS: a clone without LFS
    # holds pointer files (the spec's three lines) under the clips' names
    write_clip(tmp_path / "AudioWAV" / "1001_IEO_HAP_HI.wav")
    pointer = tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav"
    pointer.write_text(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{'4d7a' * 16}\nsize 62190\n"
    )
    with pytest.raises(TaskLayoutError) as error:
        get_task("crema-d").load(tmp_path)
    assert str(error.value) == (
        f"CREMA-D: 1 clips are Git LFS pointer files, not audio, e.g. ['{pointer}']; the "
        "repository was cloned without Git LFS: run `git lfs pull` in it (or `git lfs "
        "install` then clone again)"
    )
    write_clip(pointer)  # the real clip after `git lfs pull`
    assert len(get_task("crema-d").load(tmp_path)) == 2


def test_ravdess_speech_and_song(tmp_path: Path, write_clip: Writer) -> None:
    # Zenodo 1188976: Actor_XX/MM-VC-EE-II-SS-RR-AA.wav (03-01-01-01-01-01-01.wav is Actor_01's
    # first file); the others are of the published form
    for name in ("03-01-01-01-01-01-01", "03-01-08-02-02-02-01", "03-02-05-01-01-01-01"):
        write_clip(tmp_path / "Actor_01" / f"{name}.wav")
    write_clip(tmp_path / "Actor_24" / "03-01-07-02-01-01-24.wav")
    speech = get_task("ravdess").load(tmp_path)
    assert [r.labels for r in speech.records] == [("neutral",), ("surprised",), ("disgust",)]
    assert [r.extra["actor"] for r in speech.records] == [1, 1, 24]
    assert speech.prompts()[6] == ["this person is feeling disgusted"]
    song = get_task("ravdess").load(tmp_path, split="song")
    assert [r.labels for r in song.records] == [("angry",)]
    write_clip(tmp_path / "Actor_24" / "03-01-07-02-01-01-23.wav")
    with pytest.raises(TaskLayoutError, match="actor 24"):
        get_task("ravdess").load(tmp_path)


def test_speech_commands_35_words(tmp_path: Path, write_clip: Writer) -> None:
    # speech_commands_v0.02.tar.gz: {word}/{speaker}_nohash_{n}.wav and testing_list.txt, one
    # "{word}/{file}" a line (split "test", the 35 words; not the paper's default)
    listing = ["right/bb05582b_nohash_0.wav", "marvin/0a7c2a8d_nohash_1.wav"]
    for line in [*listing, "right/train_only_nohash_0.wav"]:
        write_clip(tmp_path / line)
    write_clip(tmp_path / "_background_noise_" / "white_noise.wav")
    (tmp_path / "testing_list.txt").write_text("\n".join(listing) + "\n")
    data = get_task("speech-commands").load(tmp_path, split="test")
    assert [r.key for r in data.records] == ["right/bb05582b_nohash_0", "marvin/0a7c2a8d_nohash_1"]
    assert data.prompts()[data.class_names.index("marvin")] == ["marvin"]
    assert len(data.class_names) == 35
    (tmp_path / "testing_list.txt").write_text("sheila/x_nohash_0.wav\n")
    with pytest.raises(TaskFileNotFoundError, match=r"absent.*sheila/x_nohash_0\.wav"):
        get_task("speech-commands").load(tmp_path, split="test")


def test_speech_commands_12_class_test_set_is_the_default(
    tmp_path: Path, write_clip: Writer
) -> None:
    # speech_commands_test_set_v0.02.tar.gz, HEAR's test split (hear-preprocess
    # speech_commands.py: WORDS down go left no off on right stop up yes, _unknown_, _silence_;
    # the test clips are test/*/*.wav, the label the folder)
    task = get_task("speech-commands")
    assert task.split == "test-12"
    for word in ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                 "_unknown_", "_silence_"):  # fmt: skip
        write_clip(tmp_path / word / f"{word}_0.wav")
    data = task.load(tmp_path)
    assert data.class_names == task.class_names
    assert len(data.class_names) == 12
    assert data.prompts()[10:] == [["unknown"], ["silence"]]
    assert data.warnings == ("SpeechCmd test-12: 12 clips found, 4890 published",)


def test_libricount(tmp_path: Path, write_clip: Writer) -> None:
    # Zenodo 1216072, LibriCount10-0dB: {count}_{id}.wav in test/ (ids here are placeholders)
    for name in ("0_0a1b.wav", "3_1c2d.wav", "10_9f9f.wav"):
        write_clip(tmp_path / "test" / name)
    data = get_task("libricount").load(tmp_path)
    assert data.targets().tolist() == [0, 10, 3]
    assert data.prompts()[10] == ["10 persons speaking"]
    write_clip(tmp_path / "test" / "11_x.wav")
    with pytest.raises(TaskLayoutError, match="count 0-10"):
        get_task("libricount").load(tmp_path)


# github.com/cdjkim/audiocaps (HEAD), dataset/{test,val,train}.csv: rows as published.
AUDIOCAPS_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]
AUDIOCAPS_TEST = [
    [103549, "7fmOlUlwoNg", 20, "Constant rattling noise and sharp vibrations"],
    [107201, "7fmOlUlwoNg", 20, "Vibrations and rattling with people speaking in the distance"],
    [
        102852,
        "7fmOlUlwoNg",
        20,
        "A machine is making clicking sound as people talk in the background",
    ],
    [20571, "7fmOlUlwoNg", 20, "Clicking and screeching metal with people speaking"],
    [
        104334,
        "7fmOlUlwoNg",
        20,
        "A machine makes stitching sounds while people are talking in the background",
    ],
    [
        103548,
        "6BJ455B1aAs",
        0,
        "A rocket flies by followed by a loud explosion and fire crackling as a truck engine "
        "runs idle",
    ],
    [103117, "6BJ455B1aAs", 0, "A whooshing noise followed by an explosion"],
    [17384, "6BJ455B1aAs", 0, "Whistling and an explosion"],
    [106025, "6BJ455B1aAs", 0, "A whistling and then an explosion and crackling"],
]  # 6BJ455B1aAs's fifth caption (104913) left out on purpose
AUDIOCAPS_TRAIN = [
    [91139, "r1nicOVtvkQ", 130, "A woman talks nearby as water pours"],
    [58146, "UDGBjjwyaqE", 20, "Multiple clanging and clanking sounds"],
    [11542, "3eJ9RynJzP8", 80, "The wind is blowing, insects are singing, and rustling occurs"],
]


def test_audiocaps_five_captions(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    rows = [*AUDIOCAPS_TEST, [300, "absentclip1", 30, "wind"]]
    write_table(tmp_path / "test.csv", rows, AUDIOCAPS_HEADER)
    write_clip(tmp_path / "audio" / "Y7fmOlUlwoNg.wav")
    write_clip(tmp_path / "audio" / "6BJ455B1aAs_0_10.wav")
    for name in ("audiocaps", "audiocaps-caption"):
        data = get_task(name).load(tmp_path)
        assert [len(r.captions) for r in data.records] == [5, 4]
        assert data.records[0].captions[1] == AUDIOCAPS_TEST[1][3]
        assert data.records[0].key == "7fmOlUlwoNg_20"
        assert data.records[0].extra["audiocap_ids"] == ["103549", "107201", "102852", "20571",
                                                         "104334"]  # fmt: skip
        assert any("1 clips do not have 5 captions" in w for w in data.warnings)
        assert any("1 of 3 listed clips are absent" in w for w in data.warnings)
        assert data.class_names == ()
    # two files of one clip in different folders: named, not shadowed
    write_clip(tmp_path / "test" / "Y7fmOlUlwoNg.flac", format="FLAC")
    with pytest.raises(TaskLayoutError, match=r"stem 'Y7fmOlUlwoNg': \['audio/Y7fmOlUlwoNg\.wav', "
                       r"'test/Y7fmOlUlwoNg\.flac'\]"):  # fmt: skip
        get_task("audiocaps").load(tmp_path)


def test_audiocaps_training_split(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    write_table(tmp_path / "train.csv", AUDIOCAPS_TRAIN, AUDIOCAPS_HEADER)
    for _, ytid, start, _ in AUDIOCAPS_TRAIN:
        write_clip(tmp_path / "train" / f"{ytid}_{start}.wav")
    task = get_task("audiocaps")
    assert task.train_split == "train"
    data = task.load(tmp_path, split="train")
    assert [r.captions for r in data.records] == [(row[3],) for row in AUDIOCAPS_TRAIN]
    # one caption a training clip is the published form: no five-caption warning
    assert data.warnings == ("AudioCaps train: 3 clips found, 49838 published",)


# Clotho v2.1 (Zenodo 4783391): clotho_captions_{development,evaluation}.csv headers
# file_name,caption_1..caption_5; "Distorted AM Radio noise.wav" is a development clip and its
# first two captions are as published, the others are placeholders.
CLOTHO_HEADER = ["file_name", *(f"caption_{i}" for i in range(1, 6))]
CLOTHO_DEVELOPMENT = [
    ["Distorted AM Radio noise.wav", "A muddled noise of broken channel of the TV",
     "A television blares the rhythm of a static TV.", "radio static 3", "radio static 4",
     "radio static 5"],
    ["Pipe hit.wav", *(f"a pipe is hit {i}" for i in range(1, 6))],
]  # fmt: skip


def test_clotho_evaluation(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    rows = [["Santa Motor.wav", *(f"a motor hums, then stops {i}" for i in range(5))],
            ["rain 2.wav", *(f"rain falls {i}" for i in range(5))]]  # fmt: skip
    for row in rows:
        write_clip(tmp_path / "evaluation" / row[0])
    write_table(tmp_path / "clotho_captions_evaluation.csv", rows, CLOTHO_HEADER)
    data = get_task("clotho").load(tmp_path)
    assert data.records[0].captions == tuple(f"a motor hums, then stops {i}" for i in range(5))
    assert data.records[1].key == "evaluation/rain 2"
    assert data.warnings == ("Clotho evaluation: 2 clips found, 1045 published",)
    write_table(tmp_path / "clotho_captions_evaluation.csv", [r[:3] for r in rows],
                CLOTHO_HEADER[:3])  # fmt: skip
    with pytest.raises(TaskLayoutError, match=r"lacks \['caption_3', 'caption_4', 'caption_5'\]"):
        get_task("clotho-caption").load(tmp_path)


def test_clotho_development(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    for row in CLOTHO_DEVELOPMENT:
        write_clip(tmp_path / "development" / row[0])
    write_table(tmp_path / "clotho_captions_development.csv", CLOTHO_DEVELOPMENT, CLOTHO_HEADER)
    task = get_task("clotho-caption")
    assert task.train_split == "development"
    data = task.load(tmp_path, split="development")
    assert data.records[0].key == "development/Distorted AM Radio noise"
    assert data.records[0].captions[:2] == tuple(CLOTHO_DEVELOPMENT[0][1:3])
    assert data.warnings == ("Clotho captioning development: 2 clips found, 3839 published",)
    with pytest.raises(TaskFileNotFoundError, match=r"clotho_captions_validation\.csv not found"):
        task.load(tmp_path, split="validation")


def test_records_feed_manifest_dataset(tmp_path: Path, write_clip: Writer) -> None:
    for name in ("0_a.wav", "2_b.wav"):
        write_clip(tmp_path / name)
    data = get_task("libricount").load(tmp_path)
    frontend = FrontendConfig(sample_rate=16000, fmax=8000.0, clip_seconds=0.1)
    dataset = ManifestDataset(list(data.records), frontend, train=False)
    item = dataset[1]
    assert isinstance(item, dict)
    assert item["labels"] == ("2",)
    assert item["waveform"].shape == (1600,)
    assert float(item["waveform"].abs().max()) > 0
