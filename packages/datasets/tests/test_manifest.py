from __future__ import annotations

import json
from pathlib import Path

import pytest

from clapkit.data import (
    ManifestError,
    ManifestRecord,
    read_manifest,
    records_from_folder,
    write_manifest,
)


def test_read_resolves_paths_relative_to_the_manifest(manifest: Path) -> None:
    records = read_manifest(manifest)
    assert len(records) == 12
    first = records[0]
    assert first.audio == manifest.parent / "clips" / "0_jackson_0.flac"
    assert first.audio.is_file()
    assert first.captions == ("a man says zero", "the digit zero", "zero")
    assert first.labels == ("zero",)
    assert first.key == "clips/0_jackson_0"


def test_caption_string_labels_string_and_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    line = {"audio": "/abs/a.wav", "caption": "one", "labels": "dog", "split": "test"}
    path.write_text(json.dumps(line) + "\n\n")
    (record,) = read_manifest(path)
    assert record.audio == Path("/abs/a.wav")
    assert record.captions == ("one",)
    assert record.labels == ("dog",)
    assert record.extra == {"split": "test"}


def test_a_byte_order_mark_and_crlf_line_ends_are_read(manifest: Path) -> None:
    """What Excel and PowerShell save: UTF-8 with a BOM, lines ending in CRLF."""
    windows = manifest.with_name("windows.jsonl")
    lines = manifest.read_text(encoding="utf-8").splitlines()
    windows.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n\r\n")
    records = read_manifest(windows)
    expected = read_manifest(manifest)
    assert [(r.key, r.captions, r.labels, r.extra) for r in records] == [
        (r.key, r.captions, r.labels, r.extra) for r in expected
    ]
    assert records[0].key == "clips/0_jackson_0"  # no BOM in the first key or path
    assert records[-1].captions[-1] == expected[-1].captions[-1]  # no "\r" at the end


def test_sidecars_with_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfa dog barks\r\na dog\r\n")
    (tmp_path / "b.wav").write_bytes(b"")
    (tmp_path / "b.json").write_bytes(b'\xef\xbb\xbf{"caption": "rain", "split": "test"}\r\n')
    a, b = records_from_folder(tmp_path)
    assert a.captions == ("a dog barks", "a dog")
    assert (b.captions, b.extra) == (("rain",), {"split": "test"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"caption": "x"}', "missing or empty 'audio'"),
        ('{"audio": "a.wav", "caption": 3}', "'caption' must be a string or a list"),
        ('{"audio": "a.wav", "labels": [1]}', "'labels' must be a string or a list"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"audio": "ok.wav"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad\.jsonl:2: .*{message}"):
        read_manifest(path)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text('{"audio": "a.wav"}\n{"audio": "a.wav"}\n')
    with pytest.raises(ManifestError, match=r"dup\.jsonl:2: key 'a' repeats .*dup\.jsonl:1"):
        read_manifest(path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")


def test_write_then_read_round_trips(tmp_path: Path, manifest: Path) -> None:
    records = read_manifest(manifest)
    copy = write_manifest(records, tmp_path / "sub" / "copy.jsonl")
    assert '"audio": "../clips/0_jackson_0.flac"' in copy.read_text()
    again = read_manifest(copy)
    assert [r.audio.resolve() for r in again] == [r.audio.resolve() for r in records]
    assert [(r.captions, r.labels) for r in again] == [(r.captions, r.labels) for r in records]


def test_records_from_folder_reads_sidecars(clip_folder: Path) -> None:
    (clip_folder / "0_jackson_0.json").write_text('{"caption": ["zero"], "labels": ["0"]}')
    (clip_folder / "1_jackson_0.txt").write_text("one\n\nthe digit one\n")
    records = {r.key: r for r in records_from_folder(clip_folder)}
    assert len(records) == 12
    assert records["0_jackson_0"].captions == ("zero",)
    assert records["0_jackson_0"].labels == ("0",)
    assert records["1_jackson_0"].captions == ("one", "the digit one")
    assert records["2_jackson_0"].captions == ()
    assert isinstance(records["2_jackson_0"], ManifestRecord)
