"""ESC-50, ESC50-Actions, FSD50K, UrbanSound8K, DCASE2017 task 4, AudioSet and SESA layouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clapkit.data.tasks import TaskFileNotFoundError, TaskLayoutError, get_task

Writer = Callable[..., Path]
ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def _esc50(root: Path, write_clip: Writer, write_table: Writer) -> Path:
    # karolpiczak/ESC-50 meta/esc50.csv: the header and three rows (clips that the published
    # action file lists too; esc10 True for the ESC-10 classes dog and sea_waves)
    rows = [
        ["1-100032-A-0.wav", 1, 0, "dog", "True", 100032, "A"],
        ["2-102852-A-11.wav", 2, 11, "sea_waves", "True", 102852, "A"],
        ["5-9032-A-0.wav", 5, 0, "dog", "True", 9032, "A"],
    ]
    for row in rows:
        write_clip(root / "audio" / str(row[0]))
    write_table(root / "meta" / "esc50.csv", rows, ESC50_HEADER)
    return root


def test_esc50_reads_every_fold(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    data = get_task("esc50").load(_esc50(tmp_path, write_clip, write_table))
    assert [r.labels for r in data.records] == [("dog",), ("sea_waves",), ("dog",)]
    assert [r.extra["fold"] for r in data.records] == [1, 2, 5]
    assert data.records[1].key == "audio/2-102852-A-11"
    assert data.records[1].audio == tmp_path / "audio" / "2-102852-A-11.wav"
    assert data.split == "all-folds"
    assert len(data.class_names) == 50
    assert data.class_names[11] == "sea_waves"
    assert data.prompts()[11] == ["this is a sound of sea waves"]
    assert data.targets().tolist() == [0, 11, 0]
    assert data.warnings == ("ESC50 all-folds: 3 clips found, 2000 published",)


def test_esc50_errors_name_the_file(
    tmp_path: Path, write_clip: Writer, write_table: Writer
) -> None:
    with pytest.raises(TaskFileNotFoundError, match=r"meta/esc50\.csv not found; expected"):
        get_task("esc50").load(tmp_path)
    root = _esc50(tmp_path, write_clip, write_table)
    table = root / "meta" / "esc50.csv"
    table.write_text(table.read_text().replace("sea_waves", "waves"))
    with pytest.raises(TaskLayoutError, match=r"esc50\.csv:3: target 11 with category 'waves'"):
        get_task("esc50").load(root)
    write_table(table, [["1-100032-A-0.wav", 1, 0, "dog"]], ESC50_HEADER[:4])
    with pytest.raises(TaskLayoutError, match=r"lacks \['esc10', 'src_file', 'take'\]"):
        get_task("esc50").load(root)
    write_table(table, [["1-100032-A-0.wav", 1, 0, "dog", "True", 1, "A"]] * 2 + [
        ["1-4-A-0.wav", 1, 0, "dog", "True", 4, "A"]], ESC50_HEADER)  # fmt: skip
    with pytest.raises(TaskFileNotFoundError, match=r"1 clips .* absent.*1-4-A-0\.wav"):
        get_task("esc50").load(root)


# github.com/bmartin1/Identifying_Actions_for_Sound_Event_Classification (11bb9ca),
# action_vectors_dataset/actionvector_one_per_audiofile_sum.csv: its header and four rows as
# published (sums of three listeners' 0-4 ratings).
ACTIONS_SUM_CSV = """\
filename,fold,target,category,blowing,breaking,calling,crumpling,dripping,exhaling,exploding,gasping,groaning,pouring,ringing,rolling,rotating,scraping,singing,sizzling,splashing,tapping,vibrating,wailing
1-100032-A-0.wav,1,0,dog,1.0,0.0,10.0,0.0,0.0,3.0,0.0,3.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,4.0
1-100038-A-14.wav,1,14,chirping_birds,0.0,0.0,2.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,2.0,0.0,0.0,0.0,6.0,0.0,0.0,0.0,3.0,3.0
1-101336-A-30.wav,1,30,door_wood_knock,0.0,2.0,0.0,0.0,3.0,0.0,0.0,0.0,0.0,0.0,0.0,2.0,0.0,0.0,0.0,0.0,0.0,12.0,0.0,0.0
1-17367-A-10.wav,1,10,rain,2.0,1.0,0.0,0.0,12.0,2.0,0.0,0.0,0.0,10.0,0.0,0.0,0.0,2.0,0.0,1.0,12.0,3.0,0.0,0.0
"""
# meta/esc50.csv rows of the same clips (karolpiczak/ESC-50; esc10 as the ESC-10 subset says)
ACTION_CLIPS = [
    ["1-100032-A-0.wav", 1, 0, "dog", "True", 100032, "A"],
    ["1-100038-A-14.wav", 1, 14, "chirping_birds", "False", 100038, "A"],
    ["1-101336-A-30.wav", 1, 30, "door_wood_knock", "False", 101336, "A"],
    ["1-17367-A-10.wav", 1, 10, "rain", "True", 17367, "A"],
]


@pytest.mark.parametrize("folder", ["action_vectors_dataset", "meta"])
def test_esc50_actions_published_sums(
    tmp_path: Path, write_clip: Writer, write_table: Writer, folder: str
) -> None:
    for row in ACTION_CLIPS:
        write_clip(tmp_path / "audio" / str(row[0]))
    write_table(tmp_path / "meta" / "esc50.csv", ACTION_CLIPS, ESC50_HEADER)
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / folder / "actionvector_one_per_audiofile_sum.csv").write_text(ACTIONS_SUM_CSV)
    data = get_task("esc50-actions").load(tmp_path)
    assert len(data.class_names) == 20
    assert data.class_names[:3] == ("blowing", "breaking", "calling")
    # an action is a label when its sum is >= 7 (mean rating above 2)
    assert [r.labels for r in data.records] == [
        ("calling",),
        (),
        ("tapping",),
        ("dripping", "pouring", "splashing"),
    ]
    assert data.records[1].extra["ratings"]["singing"] == 6.0
    assert data.targets().sum().item() == 5.0
    assert data.prompts()[17] == ["this is a sound of tapping"]


def test_esc50_actions_errors(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    for row in ACTION_CLIPS:
        write_clip(tmp_path / "audio" / str(row[0]))
    write_table(tmp_path / "meta" / "esc50.csv", ACTION_CLIPS, ESC50_HEADER)
    with pytest.raises(TaskFileNotFoundError, match=r"actionvector_one_per_audiofile_sum\.csv not"):
        get_task("esc50-actions").load(tmp_path)
    table = tmp_path / "meta" / "actionvector_one_per_audiofile_sum.csv"
    table.write_text(ACTIONS_SUM_CSV.replace(",1,14,chirping_birds,", ",1,14,crow,"))
    with pytest.raises(TaskLayoutError, match=r"sum\.csv:3: fold 1, category 'crow' disagree"):
        get_task("esc50-actions").load(tmp_path)
    table.write_text(ACTIONS_SUM_CSV.replace("12.0,3.0,0.0,0.0\n", "13.0,3.0,0.0,0.0\n"))
    with pytest.raises(TaskLayoutError, match=r"sum\.csv:5: rating sums \{'splashing': 13\.0\}"):
        get_task("esc50-actions").load(tmp_path)
    # the invented layout of before (filename + fractions) is named as not the published one
    write_table(table, [["1-100032-A-0.wav", 1.0]], ["filename", "calling"])
    with pytest.raises(TaskLayoutError, match=r"lacks \['fold', 'target', 'category', 'blowing'"):
        get_task("esc50-actions").load(tmp_path)


def test_fsd50k_multilabel(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    # Zenodo 4060432, FSD50K.ground_truth: vocabulary.csv has no header (index, label, mid),
    # eval.csv the header fname,labels,mids with quoted comma-separated labels; the 198 other
    # classes are placeholders, the eval rows of the published form
    truth = tmp_path / "FSD50K.ground_truth"
    vocabulary = [[i, f"Label_{i}", f"/m/{i}"] for i in range(198)]
    vocabulary += [[198, "Electric_guitar", "/m/02sgy"], [199, "Guitar", "/m/0342h"]]
    write_table(truth / "vocabulary.csv", vocabulary)
    write_table(
        truth / "eval.csv",
        [[37199, "Electric_guitar,Guitar", "/m/02sgy,/m/0342h"], [5, "Label_3", "/m/3"]],
        ["fname", "labels", "mids"],
    )
    for name in ("37199", "5"):
        write_clip(tmp_path / "FSD50K.eval_audio" / f"{name}.wav")
    assert '"Electric_guitar,Guitar"' in (truth / "eval.csv").read_text()
    data = get_task("fsd50k").load(tmp_path)
    assert [r.labels for r in data.records] == [("Electric_guitar", "Guitar"), ("Label_3",)]
    assert data.targets().sum(dim=1).tolist() == [2.0, 1.0]
    assert data.prompts()[198] == ["this is a sound of electric guitar"]
    write_table(truth / "eval.csv", [[5, "Bass", "/m/x"]], ["fname", "labels", "mids"])
    with pytest.raises(TaskLayoutError, match=r"eval\.csv:2: unknown class 'Bass'"):
        get_task("fsd50k").load(tmp_path)


def test_us8k_all_folds(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    # UrbanSound8K.tar.gz metadata/UrbanSound8K.csv: the header and its first two rows
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    rows = [
        ["100032-3-0-0.wav", 100032, 0.0, 0.317551, 1, 5, 3, "dog_bark"],
        ["100263-2-0-117.wav", 100263, 58.5, 62.5, 1, 5, 2, "children_playing"],
    ]
    for row in rows:
        write_clip(tmp_path / "audio" / f"fold{row[5]}" / str(row[0]))
    write_table(tmp_path / "metadata" / "UrbanSound8K.csv", rows, header)
    data = get_task("us8k").load(tmp_path)
    assert [r.key for r in data.records] == [
        "audio/fold5/100032-3-0-0",
        "audio/fold5/100263-2-0-117",
    ]
    assert data.targets().tolist() == [3, 2]
    assert data.prompts()[3] == ["this is a sound of dog bark"]


def test_dcase17_weak_labels(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    # groundtruth_weak_label_testing_set.csv (DCASE2017 task 4, tab-separated, no header), rows
    # as published (a copy: ankitshah009/Task-4-Large-scale-weakly-supervised-sound-event-
    # detection-for-smart-cars): a clip with two labels, a YouTube id ending in "_0"; the last
    # row is of their form, its clip absent from the download
    rows = [
        ["-5QrBL6MzLg_60.000_70.000.wav", "60.000", "70.000", "Train horn"],
        ["-Gbohom8C4Q_30.000_40.000.wav", "30.000", "40.000", "Train horn"],
        ["-Gbohom8C4Q_30.000_40.000.wav", "30.000", "40.000", "Air horn, truck horn"],
        ["-9oKZsjjf_0_20.000_30.000.wav", "20.000", "30.000", "Skateboard"],
        ["gone_0.000_10.000.wav", "0.000", "10.000", "Car"],
    ]
    write_table(tmp_path / "groundtruth_weak_label_testing_set.csv", rows, delimiter="\t")
    write_clip(tmp_path / "audio" / "Y-5QrBL6MzLg_60.000_70.000.wav")
    write_clip(tmp_path / "audio" / "-Gbohom8C4Q_30.000_40.000.wav")
    write_clip(tmp_path / "testing" / "-9oKZsjjf_0_20.000_30.000.wav")
    data = get_task("dcase17-t4").load(tmp_path)
    assert [r.labels for r in data.records] == [
        ("Train horn",), ("Train horn", "Air horn, truck horn"), ("Skateboard",)
    ]  # fmt: skip
    assert [r.extra["ytid"] for r in data.records] == ["-5QrBL6MzLg", "-Gbohom8C4Q", "-9oKZsjjf_0"]
    assert data.targets().sum(dim=1).tolist() == [1.0, 2.0, 1.0]
    assert data.prompts()[1] == ["this is a sound of air horn, truck horn"]
    assert any("1 of 4 listed clips are absent" in w for w in data.warnings)
    with pytest.raises(TaskFileNotFoundError, match=r"evaluation_set\.csv not found"):
        get_task("dcase17-t4").load(tmp_path, split="evaluation")
    # a second file with a listed clip's stem, in another folder, is named, not shadowed
    write_clip(tmp_path / "backup" / "-9oKZsjjf_0_20.000_30.000.wav")
    with pytest.raises(TaskLayoutError, match=r"2 files .* stem '-9oKZsjjf_0_20\.000_30\.000': "
                       r"\['backup/-9oKZsjjf_0_20\.000_30\.000\.wav', 'testing/-9oK"):  # fmt: skip
        get_task("dcase17-t4").load(tmp_path)


def test_audioset_eval_segments(tmp_path: Path, write_clip: Writer, write_table: Writer) -> None:
    # storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/eval_segments.csv: its
    # comment lines and the row -0RWZT-miFs as published; the other two rows are of its form
    (tmp_path / "eval_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:25 2017\n"
        "# num_ytids=20371, num_segs=20371, num_unique_labels=527, num_positive_labels=51804\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '-0RWZT-miFs, 420.000, 430.000, "/m/03v3yw,/m/0k4j"\n'
        '--BfvyPmVMo, 20.000, 30.000, "/m/09x0r"\n'
        '--U7joUcTCo, 0.000, 10.000, "/m/0k4j"\n'
    )
    # class_labels_indices.csv: header index,mid,display_name; display names as published,
    # the index column renumbered for the four classes kept
    write_table(
        tmp_path / "class_labels_indices.csv",
        [[0, "/m/09x0r", "Speech"], [1, "/m/05zppz", "Male speech, man speaking"],
         [2, "/m/0k4j", "Car"], [3, "/m/03v3yw", "Keys jangling"]],
        ["index", "mid", "display_name"],
    )  # fmt: skip
    write_clip(tmp_path / "eval" / "Y-0RWZT-miFs.wav")
    write_clip(tmp_path / "eval" / "--BfvyPmVMo_20.000_30.000.flac", format="FLAC")
    data = get_task("audioset").load(tmp_path)
    assert [r.labels for r in data.records] == [("Keys jangling", "Car"), ("Speech",)]
    assert data.records[0].extra["mids"] == ["/m/03v3yw", "/m/0k4j"]
    assert data.class_names == ("Speech", "Male speech, man speaking", "Car", "Keys jangling")
    assert data.prompts()[1] == ["this is a sound of male speech, man speaking"]
    assert any("1 of 3 listed clips are absent" in w for w in data.warnings)
    assert any("2 clips found, 20371 published" in w for w in data.warnings)


def test_sesa_class_from_file_name_or_folder(tmp_path: Path, write_clip: Writer) -> None:
    # Zenodo 3519845's readme: classes 0 casual, 1 gunshot, 2 explosion, 3 siren; folders
    # train/ (480 files) and test/ (105); where a clip's class is written is not stated, so
    # both a name prefix and a class folder (by name or number) are read
    for name in ("casual_000.wav", "Gunshot_011.wav", "explosion_3.wav", "siren/a.wav", "1/b.wav"):
        write_clip(tmp_path / "test" / name)
    write_clip(tmp_path / "train" / "siren_999.wav")
    data = get_task("sesa").load(tmp_path)
    assert [(r.key, r.labels[0]) for r in data.records] == [
        ("test/1/b", "gunshot"),
        ("test/Gunshot_011", "gunshot"),
        ("test/casual_000", "casual"),
        ("test/explosion_3", "explosion"),
        ("test/siren/a", "siren"),
    ]
    write_clip(tmp_path / "test" / "dog_1.wav")
    with pytest.raises(TaskLayoutError, match=r"dog_1\.wav: no class in its folder or name"):
        get_task("sesa").load(tmp_path)
