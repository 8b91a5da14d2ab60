"""Hub cards written with ModelCardData from metrics.json; uploads against a fake HfApi."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard

from clapkit.core import model_card, push_folder_to_hub
from clapkit.core.testing import RecordingHubApi

METRICS = {
    "esc50": {"accuracy": 0.939, "n_clips": 2000},
    "fsd50k": {"mAP": 0.485, "n_clips": 10231, "skipped": {}},
    "audiocaps-retrieval": {"audio_to_text/R@1": 0.425, "text_to_audio/R@1": 0.356},
}


def test_card_metadata_holds_licence_task_and_the_evaluation(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    card = model_card(
        model_name="clap-htsat22-gpt2",
        description="HTSAT-22 + GPT2 trained by `recipes/pretrain_clap.py`.",
        datasets=["audiocaps", "clotho"],
        metrics=tmp_path / "metrics.json",
    )
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data.to_dict()
    assert data["license"] == "mit"
    assert data["library_name"] == "clapkit"
    assert data["pipeline_tag"] == "zero-shot-audio-classification"
    assert data["datasets"] == ["audiocaps", "clotho"]
    results = data["model-index"][0]["results"]
    found = {(r["dataset"]["name"], m["type"]): m["value"] for r in results for m in r["metrics"]}
    assert found == {
        ("esc50", "accuracy"): 0.939,
        ("fsd50k", "mAP"): 0.485,
        ("audiocaps-retrieval", "audio_to_text/R@1"): 0.425,
        ("audiocaps-retrieval", "text_to_audio/R@1"): 0.356,
    }
    text = (tmp_path / "README.md").read_text()
    assert "More Information Needed" not in text
    assert "| esc50 | accuracy | 0.939 |" in text


def test_push_uploads_folder_and_card_in_one_commit_leaving_the_folder(
    tiny_model: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    (folder / ".model.partial").write_text("an interrupted write")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    api = RecordingHubApi()
    card = model_card(model_name="tiny", description="A test model.", metrics=METRICS)
    url = push_folder_to_hub(folder, "me/tiny-clap", card=card, api=api)  # type: ignore[arg-type]
    assert url == "https://hub/commit/1"
    assert api.calls[0] == ("create_repo", {"repo_id": "me/tiny-clap", "private": False,
                                            "exist_ok": True, "repo_type": "model"})  # fmt: skip
    files = api.uploaded()
    assert {"README.md", "config.json", "model.safetensors"} <= set(files)
    assert ".model.partial" not in files
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    (tmp_path / "card.md").write_bytes(files["README.md"])
    assert ModelCard.load(tmp_path / "card.md").data.model_name == "tiny"
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # nothing written into the folder
    with pytest.raises(FileNotFoundError, match=r"holds no config\.json: not a saved model folder"):
        push_folder_to_hub(tmp_path, "me/x", api=api)  # type: ignore[arg-type]


def test_push_command_uploads_with_a_card(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from clapkit.core import hub_card
    from clapkit.core.cli import main

    api = RecordingHubApi()
    monkeypatch.setattr(hub_card, "HfApi", lambda token=None: api)
    tiny_model.save_pretrained(tmp_path / "model")
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    metrics = str(tmp_path / "metrics.json")
    command = ["push", str(tmp_path / "model"), "me/tiny", "--metrics", metrics,
               "--dataset", "fsdd", "--format", "json"]  # fmt: skip
    assert main(command) == 0
    assert json.loads(capsys.readouterr().out)["commit"] == "https://hub/commit/1"
    assert [name for name, _ in api.calls] == ["create_repo", "create_commit"]
    (tmp_path / "card.md").write_bytes(api.uploaded()["README.md"])
    data = ModelCard.load(tmp_path / "card.md").data
    assert data.datasets == ["fsdd"]
    assert data.eval_results[0].metric_value == 0.939
