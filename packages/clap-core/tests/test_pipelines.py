"""``clapkit.core.pipeline``: transformers' call convention over ClapModel's one implementation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from clapkit.core import PIPELINE_TASKS, pipelines
from clapkit.core import pipeline as make_pipeline


def test_zero_shot_pipeline_answers_as_transformers_does(
    tiny_model: Any, fsdd_files: list[Path], tmp_path: Path
) -> None:
    tiny_model.save_pretrained(tmp_path / "model")
    pipe = make_pipeline("zero-shot-audio-classification", model=tmp_path / "model")
    labels = ["zero", "one", "seven"]
    probs = tiny_model.zero_shot([fsdd_files[0]], labels)[0].tolist()
    result = pipe(str(fsdd_files[0]), candidate_labels=labels)
    assert [r["label"] for r in result] == [labels[i] for i in np.argsort(probs)[::-1]]
    assert [r["score"] for r in result] == pytest.approx(sorted(probs, reverse=True), rel=1e-5)
    assert sum(r["score"] for r in result) == pytest.approx(1.0)
    # a list gives a list per clip; transformers' {"raw", "sampling_rate"} dicts are taken
    wave, rate = sf.read(fsdd_files[1], dtype="float32")
    both = pipe([str(fsdd_files[0]), {"raw": wave, "sampling_rate": rate}],
                candidate_labels=labels, top_k=2)  # fmt: skip
    assert len(both) == 2
    assert [r["label"] for r in both[0]] == [r["label"] for r in result[:2]]
    direct = tiny_model.zero_shot([wave], labels, sample_rate=rate)[0]
    assert both[1][0]["score"] == pytest.approx(float(direct.max()), rel=1e-5)


def test_retrieval_pipeline_ranks_the_bank(tiny_model: Any, fsdd_files: list[Path]) -> None:
    pipe = make_pipeline("audio-text-retrieval", model=tiny_model)
    bank = [str(f) for f in fsdd_files[:4]]
    expected = tiny_model.retrieve(["a man says one"], bank, k=2)
    hits = pipe("a man says one", audio=bank, top_k=2)
    assert [h["index"] for h in hits] == expected.indices[0].tolist()
    assert [h["audio"] for h in hits] == [bank[i] for i in expected.indices[0].tolist()]
    assert [h["score"] for h in hits] == pytest.approx(expected.scores[0].tolist(), rel=1e-5)
    embedded = tiny_model.embed_audio(bank)
    from_embeddings = pipe(["a man says one", "seven"], audio=embedded, top_k=2)
    assert [h["index"] for h in from_embeddings[0]] == expected.indices[0].tolist()
    assert from_embeddings[0][0]["audio"] is None


def test_unknown_tasks_and_missing_packages_are_named(
    tiny_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = sorted(PIPELINE_TASKS)
    with pytest.raises(
        KeyError, match=re.escape(f"unknown task 'audio-tagging'; the tasks are {tasks}")
    ):
        make_pipeline("audio-tagging", model=tiny_model)
    real_import = pipelines.importlib.import_module

    def without_caption(name: str) -> Any:
        if name == "clapkit.caption":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name)

    monkeypatch.setattr(pipelines.importlib, "import_module", without_caption)
    message = "the 'audio-captioning' pipeline needs clapkit-caption: pip install clapkit-caption"
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        make_pipeline("audio-captioning", model=tiny_model)
