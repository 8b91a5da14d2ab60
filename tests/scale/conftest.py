"""The scale suite's assets, built once per session (text towers at their real sizes, manifests,
shards, a CLAP folder); see ``assets.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assets import FSDD, Assets, text_tower_folder, write_lines


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    from clapkit.core import build_clap
    from clapkit.train.demo import fsdd_manifests, fsdd_multitask_manifests

    root = tmp_path_factory.mktemp("scale")
    text = {
        kind: text_tower_folder(kind, root / kind)
        for kind in ("gpt2-eot", "bert", "roberta", "clip")
    }
    clap = root / "clap-htsat22-gpt2"
    build_clap(
        "htsat-22", "gpt2-eot", text_kwargs={"pretrained": text["gpt2-eot"]}
    ).save_pretrained(clap)
    train_all, _ = fsdd_manifests(FSDD, root / "fsdd", "theo", clips_per_digit=1)
    lines = Path(train_all).read_text().splitlines()
    # 8 pairs: 2 processes x micro-batches of 2 -> 2 updates; the captioner's test: 2 of them
    train = write_lines(root / "train8.jsonl", lines[:8])
    test = write_lines(root / "test2.jsonl", lines[:2])
    shards = root / "shards"
    subprocess.run(
        [sys.executable, "-m", "clapkit.data.make_shards", "--manifest", str(train),
         "--output-dir", str(shards), "--samples-per-shard", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    multitask, _ = fsdd_multitask_manifests(FSDD, root / "multitask", "theo", 1)
    # fine-tuning folds by speaker: jackson held out, 8 training clips of two other speakers
    by_speaker = {
        s: [ln for ln in lines if f'"speaker": "{s}"' in ln]
        for s in ("jackson", "nicolas", "yweweler")
    }
    labelled = write_lines(
        root / "labelled.jsonl",
        by_speaker["jackson"][:2] + by_speaker["nicolas"][:4] + by_speaker["yweweler"][:4],
    )
    return Assets(text, clap, train, test, shards, Path(multitask), labelled)
