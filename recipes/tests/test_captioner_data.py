"""``train_captioner.py --data clotho=PATH``: the captioner reads Clotho as it is published."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import soundfile as sf

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from recipe_runner import python  # noqa: E402

FSDD = Path(__file__).resolve().parents[2] / "data" / "fsdd" / "recordings"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _clotho_from_fsdd(root: Path) -> Path:
    """Clotho v2.1's layout (clotho_captions_{split}.csv with file_name,caption_1..caption_5;
    the clips in {split}/) holding FSDD recordings, five captions each."""
    clips = sorted(FSDD.glob("*_jackson_0.flac"))
    for split, chosen in (("development", clips[:6]), ("evaluation", clips[6:8])):
        rows = []
        for clip in chosen:
            wave, rate = sf.read(clip, dtype="float32")
            name = f"{clip.stem} recording.wav"
            (root / split).mkdir(parents=True, exist_ok=True)
            sf.write(root / split / name, wave, rate)
            word = DIGITS[int(clip.stem[0])]
            rows.append([name, *(f"a man says {word} {i}" for i in range(1, 6))])
        with (root / f"clotho_captions_{split}.csv").open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["file_name", *(f"caption_{i}" for i in range(1, 6))])
            writer.writerows(rows)
    return root


def test_smoke_captioner_trains_on_clotho_development(tmp_path: Path) -> None:
    root = _clotho_from_fsdd(tmp_path / "clotho")
    out = tmp_path / "run"
    python("train_captioner.py", "--preset", "smoke", "--data", f"clotho-caption={root}",
           "--epochs", "1", "--output-dir", str(out), "--log-with", "none")  # fmt: skip
    train = [json.loads(line) for line in (out / "data" / "clotho-caption-development.jsonl")
             .read_text().splitlines()]  # fmt: skip
    assert len(train) == 6
    assert train[0]["audio"].endswith("development/0_jackson_0 recording.wav")
    assert train[0]["caption"] == [f"a man says zero {i}" for i in range(1, 6)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0]
    assert "clotho-caption-evaluation" in metrics["epochs"][0]
    examples = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(examples[0]["references"]) == 5
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == f"clotho-caption={root}"
