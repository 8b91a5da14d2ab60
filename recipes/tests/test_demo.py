"""The README's main job, ``pretrain_clap.py --preset demo``, and its claim.

A file of its own: the recipes session runs one test file per CPU core, and the demo is the
longest single run (about 1.5 minutes on one core).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from recipe_runner import python  # noqa: E402


def test_demo_preset_hears_the_unheard_speaker(tmp_path: Path) -> None:
    """The demo's claim: zero-shot digits of a speaker never heard in training, well above 10%."""
    out = tmp_path / "demo"
    python("pretrain_clap.py", "--preset", "demo", "--output-dir", str(out), "--log-with", "none")
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 10
    assert metrics["epochs"][0]["heldout_theo"]["accuracy"] < 0.3  # it is learnt, not given
    assert metrics["best"]["heldout_theo"]["accuracy"] >= 0.40  # chance: 0.10
