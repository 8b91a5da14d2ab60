"""``recipes/evaluate.py`` end to end: synthetic official layouts, a tiny model, the cache, DDP."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch

from clapkit.caption import ClapCaptioner, evaluate_captions
from clapkit.core import ClapModel, build_clap
from clapkit.core.metrics import accuracy, mean_average_precision, retrieval_metrics
from clapkit.core.testing import RecordingHubApi
from clapkit.data.tasks import get_task

RECIPES = Path(__file__).resolve().parents[1]
REPO = RECIPES.parent
FSDD = sorted((REPO / "data" / "fsdd" / "recordings").glob("*_jackson_*.flac"))
GPT2_FILES = REPO / "data" / "reference" / "tokenizers" / "gpt2"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
# ESC-50 clips: (target, category, whether "calling", "tapping", "ringing" were heard)
ESC = [(0, "dog", 1, 0, 0), (0, "dog", 1, 1, 0), (1, "rooster", 0, 1, 0),
       (1, "rooster", 0, 0, 1), (2, "pig", 1, 0, 1), (2, "pig", 0, 1, 0)]  # fmt: skip
CLOTHO = [[f"clip {i} caption {j} of a {w} sound" for j in range(5)]
          for i, w in enumerate(("loud", "quiet", "short", "long"))]  # fmt: skip
DECODE = ["--beam-size", "2", "--max-new-tokens", "4", "--java", "skip", "--num-workers", "0"]


def clip(path: Path, index: int) -> Path:
    """A real FSDD recording (8 kHz) written at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave, rate = sf.read(FSDD[index % len(FSDD)], dtype="float32")
    sf.write(path, wave, rate)
    return path


def table(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out, lineterminator="\n").writerows([header, *rows])


def write_esc50(root: Path, actions: bool) -> None:
    """ESC-50-master's layout (+ the action ratings for ESC50-Actions)."""
    rows = []
    for i, (target, category, *_) in enumerate(ESC):
        name = f"{i % 5 + 1}-{1000 + i}-A-{target}.wav"
        clip(root / "audio" / name, i)
        rows.append([name, i % 5 + 1, target, category, "False", 1000 + i, "A"])
    head = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    table(root / "meta" / "esc50.csv", head, rows)
    if actions:  # the published actionvector_one_per_audiofile_sum.csv (sums 0-12)
        from clapkit.data.tasks.esc import ACTIONS

        sums = []
        for row, (_, _, *flags) in zip(rows, ESC, strict=True):
            heard = dict(zip(("calling", "tapping", "ringing"), flags, strict=True))
            sums.append([*row[:4], *(12.0 * heard.get(action, 0) for action in ACTIONS)])
        table(root / "action_vectors_dataset" / "actionvector_one_per_audiofile_sum.csv",
              ["filename", "fold", "target", "category", *ACTIONS], sums)  # fmt: skip


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with ESC-50, ESC50-Actions, Clotho and a broken UrbanSound8K."""
    root = tmp_path_factory.mktemp("data")
    write_esc50(root / "esc50", actions=False)
    write_esc50(root / "esc50-actions", actions=True)
    names = [f"clotho_{i}.wav" for i in range(len(CLOTHO))]
    for i, name in enumerate(names):
        clip(root / "clotho" / "evaluation" / name, 10 + i)
    table(root / "clotho" / "clotho_captions_evaluation.csv",
          ["file_name", *(f"caption_{j}" for j in range(1, 6))],
          [[n, *c] for n, c in zip(names, CLOTHO, strict=True)])  # fmt: skip
    # broken: the metadata CSV lacks the classID column
    table(root / "us8k" / "metadata" / "UrbanSound8K.csv", ["slice_file_name", "fold"], [["a", 1]])
    with (root / "digits.jsonl").open("w") as out:
        for i, word in enumerate(["zero", "one", "two"] * 2):
            clip(root / "digits" / f"{i}.flac", 20 + i)
            out.write(json.dumps({"audio": f"digits/{i}.flac", "labels": [word]}) + "\n")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny ClapModel and a tiny ClapCaptioner, saved with ``save_pretrained``."""
    from transformers import GPT2Config

    from clapkit.audio import FrontendConfig, cnn14_encoder
    from clapkit.caption import CaptionerConfig, transformer_mapper
    from clapkit.text import gpt2_eot

    torch.manual_seed(0)
    frontend = FrontendConfig(
        sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=32, fmin=20.0,
        fmax=4000.0, clip_seconds=0.5, fill="repeat",
    )  # fmt: skip

    def audio() -> Any:
        return cnn14_encoder(frontend=frontend, channels=(4, 8), out_dim=16, num_classes=0)

    gpt2 = {"vocab_size": 50257, "n_positions": 64, "n_embd": 16, "n_layer": 1, "n_head": 2}
    text = gpt2_eot(config=GPT2Config(**gpt2), tokenizer=str(GPT2_FILES), max_length=64)
    model = build_clap(audio(), text, projection="linear", projection_dim=16)
    folder = tmp_path_factory.mktemp("models")
    model.save_pretrained(folder / "clap")
    encoder, mapper = audio(), transformer_mapper(embed_dim=16, prefix_length=2, width=16, depth=1,
                                                  num_heads=2)  # fmt: skip
    config = CaptionerConfig(audio=encoder.get_config(), mapper=mapper.get_config(),
                             language_model=GPT2Config(**gpt2).to_dict(), projection="linear",
                             projection_dim=16)  # fmt: skip
    captioner = ClapCaptioner(
        config, tokenizer=str(GPT2_FILES), audio_encoder=encoder, mapper=mapper
    )
    captioner.save_pretrained(folder / "captioner")
    return folder / "clap", folder / "captioner"


def evaluate(*args: str, processes: int = 0) -> subprocess.CompletedProcess[str]:
    """The recipe as a script (``processes=0``) or under ``accelerate launch`` on the CPU."""
    if processes == 0:
        command = [sys.executable, str(RECIPES / "evaluate.py")]
    else:  # as recipe_runner.launch: torchrun-started processes, DDP over gloo on the CPU
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", "0", "--num_processes", str(processes),
                   "--num_cpu_threads_per_process", "1", str(RECIPES / "evaluate.py")]  # fmt: skip
    env = {**ENV, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip


def metrics_of(out: Path) -> dict[str, dict[str, Any]]:
    return json.loads((out / "metrics.json").read_text())


def zero_shot_direct(model: ClapModel, root: Path, name: str, templates: tuple[str, ...]) -> float:
    """The task's metric from ``ClapModel.zero_shot`` (what the recipe must reproduce)."""
    task = get_task(name)
    data = task.load(root)
    labels = [task.label_text(c) for c in data.class_names]
    multilabel = task.kind == "multilabel"
    scores = model.zero_shot([r.audio for r in data.records], labels, template=list(templates),
                             multilabel=multilabel)  # fmt: skip
    metric = mean_average_precision if multilabel else accuracy
    return metric(scores, data.targets())


def suite_args(models: tuple[Path, Path], layout: Path, out: Path) -> list[str]:
    clap, captioner = models
    return ["--checkpoint", str(clap), "--captioner", str(captioner), "--suite", "table2",
            "--data-root", str(layout), "--output-dir", str(out), *DECODE]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(
    layout: Path, models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The table2 suite over the layout, one process: its output folder and the process."""
    out = tmp_path_factory.mktemp("eval") / "one"
    return out, evaluate(*suite_args(models, layout, out))


def test_suite_metrics_and_failures(
    layout: Path, models: tuple[Path, Path], first_run: tuple[Path, Any]
) -> None:
    out, done = first_run
    # the broken dataset fails its task only: the others finish, the exit status says so
    assert done.returncode == 1, done.stderr
    assert "us8k: FAILED: TaskLayoutError" in done.stdout
    metrics = metrics_of(out)
    assert set(metrics) == {"esc50", "esc50-actions", "clotho", "clotho-caption"}
    status = json.loads((out / "status.json").read_text())
    assert list(status["failed"]) == ["us8k"]
    assert "lacks ['fsID'" in status["failed"]["us8k"]
    assert {"fsd50k", "audiocaps-caption"} <= set(status["not_found"])
    assert status["paper_row"] == "table2/CLAP 2023"  # CNN14+GPT2 is no Table 1 row
    report = (out / "report.md").read_text()
    assert f"| esc50 | accuracy | {metrics['esc50']['accuracy']:.3f} | 0.939 | 0.020 |" in report
    assert "- us8k: FAILED: TaskLayoutError" in report
    assert "- fsd50k: no folder" in report
    for png in ("report.png", "confusion/esc50.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "esc50 audio: 100%" in done.stderr  # a progress bar per task

    # the numbers, from ClapModel's / ClapCaptioner's public functions
    clap, captioner = models
    model = ClapModel.from_pretrained(str(clap))
    assert metrics["esc50"]["n_clips"] == 6
    for name in ("esc50", "esc50-actions"):
        expected = zero_shot_direct(model, layout / name, name, get_task(name).templates)
        assert metrics[name][get_task(name).metrics[0]] == pytest.approx(expected, abs=1e-6)
    data = get_task("clotho").load(layout / "clotho")
    paths = [r.audio for r in data.records]
    texts = model.embed_text([c for r in data.records for c in r.captions])
    expected = retrieval_metrics(
        model.embed_audio(paths) @ texts.T, torch.arange(4).repeat_interleave(5)
    )
    names = {f"{d}/{m}" for d in ("a2t", "t2a") for m in ("R@1", "R@5", "R@10", "mAP@10")}
    assert set(metrics["clotho"]) == names | {"n_clips"}
    for name in names:
        direction = {"a2t": "audio_to_text", "t2a": "text_to_audio"}[name[:3]]
        assert metrics["clotho"][name] == pytest.approx(expected[direction + name[3:]], abs=1e-6)
    cap = ClapCaptioner.from_pretrained(str(captioner))
    captions = cap.generate(paths, beam_size=2, max_new_tokens=4)
    scores = evaluate_captions(captions, [list(r.captions) for r in data.records], java="skip")
    assert metrics["clotho-caption"]["CIDEr-D"] == pytest.approx(scores.corpus["cider_d"])
    assert "SPIDEr" not in metrics["clotho-caption"]  # no Java: left out, with the reason
    assert any("spice left out" in w for w in status["warnings"]["clotho-caption"])


def test_second_run_reuses_the_cache(
    layout: Path, models: tuple[Path, Path], first_run: tuple[Path, Any], tmp_path: Path
) -> None:
    """Other templates and a manifest: audio embeddings and captions come from the cache."""
    first, _ = first_run
    out = tmp_path / "again"
    shutil.copytree(first, out)
    cache = {p: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}
    assert len([p for p in cache if "-audio-" in p.name]) == 3
    template = "a man says the digit {}"
    args = [*suite_args(models, layout, out), "--manifest", str(layout / "digits.jsonl")]
    done = evaluate(*args, "--template", template)
    assert done.returncode == 1
    for name in ("esc50", "esc50-actions", "clotho"):
        assert f"{name}: audio embeddings from cache" in done.stdout
    assert "clotho: text embeddings from cache" in done.stdout  # captions keep their key
    assert "clotho-caption: captions from cache" in done.stdout
    assert "esc50: text embeddings from cache" not in done.stdout  # new prompts
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in cache.items())
    metrics, before = metrics_of(out), metrics_of(first)
    assert metrics["clotho"] == before["clotho"]
    model = ClapModel.from_pretrained(str(models[0]))
    expected = zero_shot_direct(model, layout / "esc50", "esc50", (template,))
    assert metrics["esc50"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    # the manifest as a task: labels sorted, put into the template as they are
    assert metrics["digits"]["n_clips"] == 6
    paths = [layout / "digits" / f"{i}.flac" for i in range(6)]
    scores = model.zero_shot(paths, ["one", "two", "zero"], template=template)
    truth = torch.tensor([2, 0, 1, 2, 0, 1])
    assert metrics["digits"]["accuracy"] == pytest.approx(accuracy(scores, truth), abs=1e-6)


def test_on_error_skip_scores_the_rest_and_names_what_it_left_out(
    layout: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """A corrupt clip and an unlabelled line: fatal to the task, or left out and listed."""
    lines = (layout / "digits.jsonl").read_text().splitlines()
    good = [json.loads(line) for line in lines]
    for record in good:
        record["audio"] = str(layout / record["audio"])
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVE not really")
    unlabelled = str(layout / "digits" / "0.flac")
    manifest = tmp_path / "broken.jsonl"
    rows = [*good[:3], {"audio": str(corrupt), "labels": ["one"]},
            {"audio": unlabelled, "key": "no-label"}, *good[3:]]  # fmt: skip
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--checkpoint", str(models[0]), "--manifest", str(manifest), "--num-workers", "0"]

    done = evaluate(*args, "--output-dir", str(tmp_path / "strict"))
    assert done.returncode == 1
    # the file and the problem, and what to do, without a traceback
    assert f"--manifest: {manifest}: 1 clips have no labels" in done.stderr
    assert "on_error='skip' leaves them out" in done.stderr
    assert "Traceback" not in done.stderr

    out = tmp_path / "skip"
    done = evaluate(*args, "--output-dir", str(out), "--on-error", "skip")
    assert done.returncode == 0, done.stderr
    metrics = metrics_of(out)["broken"]
    assert metrics["n_clips"] == 6
    assert set(metrics["skipped"]) == {str(corrupt), unlabelled}
    assert "unreadable or corrupt audio" in metrics["skipped"][str(corrupt)]
    assert metrics["skipped"][unlabelled] == f"{manifest}: no labels"
    model = ClapModel.from_pretrained(str(models[0]))
    scores = model.zero_shot([r["audio"] for r in good], ["one", "two", "zero"])
    truth = torch.tensor([2, 0, 1, 2, 0, 1])
    assert metrics["accuracy"] == pytest.approx(accuracy(scores, truth), abs=1e-6)
    report = (out / "report.md").read_text()
    assert "## Clips left out of the metrics (2)" in report
    assert f"- broken: `{corrupt}`: unreadable or corrupt audio" in report


def evaluate_module() -> Any:
    """``recipes/evaluate.py`` as a module."""
    spec = importlib.util.spec_from_file_location("evaluate_recipe", RECIPES / "evaluate.py")
    assert spec is not None
    assert spec.loader is not None
    recipe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recipe  # its dataclasses look their module up while being built
    spec.loader.exec_module(recipe)
    return recipe


def test_push_to_hub_sends_the_checkpoint_with_its_metrics(
    models: tuple[Path, Path], first_run: tuple[Path, Any]
) -> None:
    out, _ = first_run
    api = RecordingHubApi("https://hub/org/clap/commit/1")
    url = evaluate_module().push_evaluated(models[0], out / "metrics.json", "org/clap", api=api)
    assert url == "https://hub/org/clap/commit/1"
    (_, commit) = api.calls[-1]
    sent = {op.path_in_repo: op.path_or_fileobj for op in commit["operations"]}
    assert {"config.json", "model.safetensors", "README.md"} <= set(sent)
    card = bytes(sent["README.md"]).decode()
    accuracy = json.loads((out / "metrics.json").read_text())["esc50"]["accuracy"]
    assert "model-index:" in card
    assert "pipeline_tag: zero-shot-audio-classification" in card
    assert f"value: {accuracy}" in card  # the evaluation's own figure


def test_cache_key_follows_the_weights(models: tuple[Path, Path], tmp_path: Path) -> None:
    recipe = evaluate_module()
    folder = tmp_path / "clap"
    shutil.copytree(models[0], folder)
    before = recipe.weights_digest(str(folder))
    assert before == recipe.weights_digest(str(models[0]))  # the weights, not the path
    clap = ClapModel.from_pretrained(str(folder))
    with torch.no_grad():
        clap.logit_scale.add_(1e-3)  # one changed number, same file size, same folder
    clap.save_pretrained(folder)
    assert recipe.weights_digest(str(folder)) != before


def test_two_processes_give_the_metrics_of_one(
    layout: Path, models: tuple[Path, Path], first_run: tuple[Path, Any], tmp_path: Path
) -> None:
    out = tmp_path / "two"
    done = evaluate(*suite_args(models, layout, out), processes=2)
    assert done.returncode == 1, done.stderr
    one, two = metrics_of(first_run[0]), metrics_of(out)
    assert set(two) == set(one)
    for task, values in one.items():
        assert two[task] == pytest.approx(values, abs=1e-6), task
    assert json.loads((out / "status.json").read_text())["failed"].keys() == {"us8k"}
