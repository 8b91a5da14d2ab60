"""Bad input through clap-core's Python API and the ``clapkit`` CLI: each case asserts the
error type and that the message names the item and the problem; "nothing lost" cases check
that existing files are untouched after a failed call."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clapkit.caption import ClapCaptioner
from clapkit.core import ClapModel
from clapkit.core.cli import main as clapkit_cli
from clapkit.core.metrics import mean_average_precision


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        ([None, "one"], TypeError, r"labels\[0\] is a NoneType \(None\), not a str"),
        (["one", 123], TypeError, r"labels\[1\] is a int \(123\), not a str"),
        ("seven", TypeError, r"got the string 'seven'; for one class write \['seven'\]"),
        (["one", "  "], ValueError, r"labels\[1\] is blank"),
        ([], ValueError, "no labels given"),
    ],
)
def test_zero_shot_labels_are_checked_item_by_item(
    model: ClapModel, clip: Path, labels: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        model.zero_shot([clip], labels)  # type: ignore[arg-type]


def test_a_template_that_is_not_a_string(model: ClapModel, clip: Path) -> None:
    with pytest.raises(TypeError, match=r"templates\[1\] is a int"):
        model.zero_shot([clip], ["one", "two"], template=["a {}", 7])  # type: ignore[list-item]


@pytest.mark.parametrize("typo", ["runs/demo/bestt", "./bestt", "../nowhere/best/"])
def test_a_missing_local_folder_is_named_before_any_hub_lookup(
    typo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"no folder {typo} \(from .*\): give an existing"):
        ClapModel.from_pretrained(typo)
    with pytest.raises(FileNotFoundError, match=rf"no folder {typo}"):
        ClapCaptioner.from_pretrained(typo)


def test_a_file_is_not_a_model_folder(model_folder: Path) -> None:
    weights = model_folder / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="is a file, not a clapkit model folder"):
        ClapModel.from_pretrained(weights)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"audio": {"architecture": "cnn14",', r"is not valid JSON \(line 1, column \d+"),
        ("[1, 2]", "must hold a JSON object, found list"),
    ],
)
def test_a_malformed_config_json_is_named(
    model_folder: Path, tmp_path: Path, text: str, message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_folder, broken)
    (broken / "config.json").write_text(text)
    before = {p.name: p.read_bytes() for p in broken.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=rf"{broken / 'config.json'} {message}"):
        ClapModel.from_pretrained(broken)
    after = {p.name: p.read_bytes() for p in broken.iterdir() if p.is_file()}
    assert after == before  # nothing lost: the folder is as it was


def test_mean_average_precision_of_one_class() -> None:
    scores = torch.tensor([[0.9], [0.8], [0.1], [0.4]])
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    # ranking: pos, neg, neg, pos -> AP = (1/1 + 2/4) / 2
    assert mean_average_precision(scores, targets) == pytest.approx(0.75)
    both = mean_average_precision(scores.repeat(1, 2), targets.repeat(1, 2))
    assert both == pytest.approx(0.75)


def test_cli_names_a_bad_file_and_keeps_the_old_output(
    model_folder: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "embeddings.safetensors"
    out.write_bytes(b"an earlier result")
    bad = tmp_path / "not_audio.wav"
    bad.write_text("this is not a WAV file")
    status = clapkit_cli(["embed", str(model_folder), str(clip), str(bad), "--output", str(out)])
    assert status == 1
    err = capsys.readouterr().err
    assert str(bad) in err
    assert out.read_bytes() == b"an earlier result"


def test_cli_labels_string_error(
    model_folder: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = clapkit_cli(["zero-shot", str(model_folder), str(clip), "--labels", "one", " "])
    assert status == 1
    assert "labels[1] is blank" in capsys.readouterr().err


def test_cli_exits_quietly_when_the_reader_closes_the_pipe(model_folder: Path, clip: Path) -> None:
    labels = [f"class{i}" for i in range(60)]
    files = [str(clip)] * 200  # a JSON table far larger than a pipe's buffer
    command = [sys.executable, "-m", "clapkit.core.cli", "zero-shot", str(model_folder), *files]
    command += ["--labels", *labels, "--format", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"["  # read one line, then go away like `head`
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()
    assert b"Broken pipe" not in stderr
    assert b"Traceback" not in stderr
    assert json.loads("[]") == []


def test_readmes_random_init_example_runs_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertConfig

    from clapkit.core import build_clap
    from clapkit.text.corpus import train_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = train_tokenizer("bert", ["a dog barks in the rain", "a siren wails"])
    model = build_clap(
        audio="cnn14",
        text="bert",
        projection_dim=1024,
        text_kwargs={"config": BertConfig(vocab_size=len(tokenizer)), "tokenizer": tokenizer},
    )
    assert model.embed_text(["a dog barks"]).shape == (1, 1024)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([None], r"texts\[0\] is a NoneType, not a str: None"),
        (["a dog", 123], r"texts\[1\] is a int, not a str: 123"),
        (["a dog", b"bytes"], r"texts\[1\] is a bytes, not a str: b'bytes'"),
    ],
)
def test_embed_text_names_the_item_that_is_not_text(
    model: ClapModel, texts: list[object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        model.embed_text(texts)  # type: ignore[arg-type]


def test_a_wav_cut_in_half_is_not_embedded(model: ClapModel, clip: Path, tmp_path: Path) -> None:
    import soundfile as sf

    from clapkit.audio import AudioLoadError

    full = tmp_path / "clip.wav"
    wave, rate = sf.read(clip, dtype="float32")
    sf.write(full, wave, rate, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioLoadError, match=r"cut.wav: truncated: its header promises \d+ frames"):
        model.embed_audio([full, cut])
    assert model.embed_audio([full]).shape == (1, 8)


def test_an_over_long_text_is_cut_with_a_warning_a_user_can_read(model: ClapModel) -> None:
    from clapkit.text import TextTruncationWarning

    model.text_encoder._warned_truncation = False  # the warning is once per encoder
    with pytest.warns(TextTruncationWarning) as caught:
        embeds = model.embed_text(["a man says seven", "seven " * 20_000])
    message = str(caught[0].message)
    assert "texts[1], 'seven seven" in message
    assert "each keeps its first" in message
    assert "end marker ' <|endoftext|>' (what the 'eot' pooling reads)" in message
    assert embeds.shape == (2, 8)
    assert torch.isfinite(embeds).all()
