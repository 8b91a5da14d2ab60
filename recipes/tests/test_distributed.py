"""Several processes, tested for equivalence: the same global batch on 1 and 2 processes gives
the same losses step for step, and tar shards on 2 processes x 2 workers are read exactly once.

The runs are the smoke preset's tiny model, on 48 of its clips (3 global batches of 16, so that
neither run has a short last group), without dropout (a dropout mask depends on which process
and micro-step draws it, so it differs between the two layouts by design).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from safetensors.torch import load_file

from clapkit.data import read_manifest
from clapkit.train.demo import fsdd_manifests
from clapkit.train.loaders import KEYS_ENV

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from recipe_runner import RECIPES, launch  # noqa: E402

FSDD = RECIPES.parent / "data" / "fsdd"
RELATIVE_TOLERANCE = 1e-5
"""Per-step losses of 1 and 2 processes: float32 reductions in another order (measured: equal
to the last bit on CPU/gloo, torch 2.11)."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """48 training clips of the smoke preset's FSDD subset and its held-out speaker."""
    folder = tmp_path_factory.mktemp("data")
    train, heldout = fsdd_manifests(FSDD, folder, "theo", clips_per_digit=2)
    lines = Path(train).read_text().splitlines()[:48]
    (folder / "train48.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train48.jsonl", Path(heldout)


def common(train: Path, heldout: Path, out: Path) -> list[str]:
    return [
        "--preset", "smoke", "--log-with", "none", "--no-dropout", "--save-every-steps", "1000",
        "--train-manifest", str(train), "--eval-manifest", str(heldout), "--output-dir", str(out),
    ]  # fmt: skip


def step_losses(out: Path) -> list[float]:
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    return [loss for epoch in epochs for loss in epoch["step_losses"]]


def test_two_processes_give_the_losses_of_one(clips: tuple[Path, Path], tmp_path: Path) -> None:
    train, heldout = clips
    one, two = tmp_path / "one", tmp_path / "two"
    with ThreadPoolExecutor(2) as pool:  # the two runs side by side: half the wall time
        runs = [
            # 1 process: micro-batches of 8, 2 micro-steps per update of 16 (full negatives)
            pool.submit(launch, "pretrain_clap.py", *common(train, heldout, one)),
            # 2 processes: 8 clips each, one step per update of 16, features gathered
            pool.submit(launch, "pretrain_clap.py", *common(train, heldout, two), processes=2),
        ]
        for run in runs:
            run.result()
    configs = [json.loads((o / "config.json").read_text()) for o in (one, two)]
    layouts = [(c["num_processes"], c["gradient_accumulation_steps"]) for c in configs]
    assert layouts == [(1, 2), (2, 1)]
    assert configs[0]["accumulate_negatives"] is True
    expected, got = step_losses(one), step_losses(two)
    assert len(expected) == 6  # 2 epochs x 3 updates of 16 clips
    for step, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert abs(a - b) <= RELATIVE_TOLERANCE * abs(a), f"step {step + 1}: {a} vs {b}"
    assert expected[0] != expected[1]  # every step sees other clips: a real trajectory
    final = "checkpoints/step_00000006_end/model.safetensors"
    weights = [load_file(o / final) for o in (one, two)]
    # batch-norm running statistics depend on the layout (updated per micro-batch on 1 process,
    # from rank 0's batch under DDP); they take no part in the training loss
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for name, tensor in weights[0].items():
        if name.endswith(statistics):
            continue
        assert (weights[1][name] - tensor).abs().max() <= 1e-4 * (tensor.abs().max() + 1), name
    assert (two / "best" / "model.safetensors").is_file()


def test_shards_on_two_processes_and_two_workers_are_read_once_per_epoch(
    clips: tuple[Path, Path], tmp_path: Path
) -> None:
    train, heldout = clips
    shards = tmp_path / "shards"
    subprocess.run(
        [sys.executable, "-m", "clapkit.data.make_shards", "--manifest", str(train),
         "--output-dir", str(shards), "--samples-per-shard", "12"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert len(list(shards.glob("*.tar"))) == 4  # one per global worker
    keys = tmp_path / "keys"
    keys.mkdir()
    out = tmp_path / "run"
    args = [a for a in common(train, heldout, out) if a not in ("--train-manifest", str(train))]
    launch(
        "pretrain_clap.py",
        *args,
        "--train-shards", str(shards), "--samples-per-epoch", "48",
        "--batch-size", "4", "--global-batch-size", "8", "--num-workers", "2",
        processes=2,
        extra_env={KEYS_ENV: str(keys)},
    )  # fmt: skip
    seen = {0: Counter[str](), 1: Counter[str]()}
    by_rank: dict[tuple[int, int], set[str]] = {}
    for rank in (0, 1):
        for line in (keys / f"keys.rank{rank}.tsv").read_text().splitlines():
            epoch, key = line.split("\t")
            seen[int(epoch)][key] += 1
            by_rank.setdefault((int(epoch), rank), set()).add(key)
    clips_in_manifest = {record.key for record in read_manifest(train)}
    for epoch in (0, 1):
        assert sum(seen[epoch].values()) == 48, f"epoch {epoch}: {sum(seen[epoch].values())} seen"
        assert set(seen[epoch]) == clips_in_manifest, f"epoch {epoch}: clips missing"
        assert set(seen[epoch].values()) == {1}, f"epoch {epoch}: a clip seen twice"
        assert [len(by_rank[epoch, r]) for r in (0, 1)] == [24, 24]  # its own 2 shards each
    assert by_rank[0, 0] != by_rank[1, 0]  # the shard order is shuffled per epoch
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [len(e["step_losses"]) for e in epochs] == [6, 6]  # 48 clips / 8 per update
