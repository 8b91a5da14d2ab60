"""Bad input through clap-core's Python API and the ``clapkit`` CLI: each case asserts the
error type and that the message names the item and the problem; "nothing lost" cases check
that existing files are untouched after a failed call."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from clapkit.audio import AudioLoadError
from clapkit.caption import ClapCaptioner
from clapkit.core import ClapModel
from clapkit.core import cli as cli_module
from clapkit.core.cli import main as clapkit_cli
from clapkit.core.metrics import accuracy, f1_score, mean_average_precision, retrieval_metrics
from clapkit.data import ManifestDataset, ManifestError


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
    # the README's own lines, run with the hub switched off (the constant huggingface_hub and
    # transformers read; the environment variable is read only once, at import)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    usage = readme.split("## Usage", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    header = usage.splitlines()[1]
    assert header == "from clapkit.core import ClapModel, build_clap"
    example = usage[usage.index("# any encoder pair of the paper's ablation, random init") :]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    namespace: dict[str, object] = {}
    exec(compile(header + "\n" + example, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, ClapModel)
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


def _with_inf(length: int, at: int) -> torch.Tensor:
    wave = torch.zeros(length)
    wave[at] = float("inf")
    return wave


@pytest.mark.parametrize(
    ("audio", "error", "message"),
    [
        (torch.full((800,), float("nan")), AudioLoadError,
         r"^audio item 0 \(\[800\] tensor\): contains 800 non-finite samples \(NaN or inf\), "
         r"the first at sample 0$"),
        ([torch.zeros(800), _with_inf(800, 10)], AudioLoadError,
         r"^audio item 1 \(\[800\] tensor\): contains 1 non-finite samples .* at sample 10$"),
        (torch.stack([torch.zeros(800), _with_inf(800, 5)]), AudioLoadError,
         r"^audio item 1 .* the first at sample 5$"),
        ([torch.zeros(800), torch.zeros(0)], ValueError,
         r"^audio item 1 is an empty waveform \(0 samples\)$"),
        (None, TypeError,
         r"^audio must be a waveform \(tensor or numpy array\), a path, bytes, an audio dict or "
         r"a list of those, got NoneType$"),
    ],
    ids=["nan", "inf in a list", "inf in a batch", "empty in a list", "none"],
)  # fmt: skip
def test_bad_waveforms_are_named_by_index(
    model: ClapModel, audio: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        model.embed_audio(audio)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):  # before any prompt is embedded or any clip
        model.zero_shot(audio, ["one", "two"])  # type: ignore[arg-type]


@pytest.mark.parametrize("texts", [None, b"a dog barks", 7])
def test_texts_that_are_not_a_list_of_strings(model: ClapModel, texts: object) -> None:
    kind = type(texts).__name__
    with pytest.raises(TypeError, match=rf"^texts must be a str or a list of str, got {kind}$"):
        model.embed_text(texts)  # type: ignore[arg-type]


def test_metrics_refuse_nan_scores_naming_the_first() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [float("nan"), 0.3]])
    multi_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    message = r"^scores hold 1 NaN value\(s\), the first at \[2, 0\]: NaN scores cannot be ranked"
    with pytest.raises(ValueError, match=message):
        mean_average_precision(scores, multi_hot)
    with pytest.raises(ValueError, match=message):
        accuracy(scores, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=message):
        f1_score(scores, multi_hot)
    with pytest.raises(
        ValueError, match=r"^similarity hold 1 NaN value\(s\), the first at \[2, 0\]"
    ):
        retrieval_metrics(scores, torch.tensor([0, 1]))
    # -inf is a score that ranks last, not an error
    assert accuracy(scores.nan_to_num(float("-inf")), torch.tensor([0, 1, 1])) == 1.0


@pytest.mark.parametrize("name", ["bestt", "runs/bestt"])
def test_a_name_that_is_neither_a_local_folder_nor_on_the_hub(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "runs/bestt" could be a hub repo id: the hub is asked (offline here), and the error says
    # both that no such local folder exists and what the hub answered
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = re.escape(f"no local folder {name} (from {tmp_path}), and fetching it as a hub ")
    message += "repo failed: LocalEntryNotFoundError"
    with pytest.raises(FileNotFoundError, match=message):
        ClapModel.from_pretrained(name)
    with pytest.raises(FileNotFoundError, match=message):
        ClapCaptioner.from_pretrained(name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(FileNotFoundError, match=message):  # the hub's arguments still reach it
        ClapModel.from_pretrained(name, local_files_only=True)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"audio": None}, r"bad ClapConfig: unknown fields \[\], missing fields \['audio'\]"),
        ({"colour": "red"}, r"bad ClapConfig: unknown fields \['colour'\]"),
        ({"projection_dropout": 2}, r"projection_dropout must be in \[0, 1\), got 2"),
    ],
)
def test_a_config_json_that_is_not_a_clapkit_config_is_named(
    model_folder: Path, tmp_path: Path, edit: dict[str, object], message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config.update(edit)
    config = {k: v for k, v in config.items() if v is not None}
    (broken / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in broken.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=f"^{re.escape(str(broken / 'config.json'))}: {message}"):
        ClapModel.from_pretrained(broken)
    assert {p.name: p.read_bytes() for p in broken.iterdir() if p.is_file()} == before


def test_cli_refuses_an_output_folder_that_does_not_exist_before_embedding(
    model_folder: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nowhere" / "embeddings.npy"
    bad = tmp_path / "not_audio.wav"
    bad.write_text("not audio")  # would fail later: the folder is named first
    status = clapkit_cli(["embed", str(model_folder), str(clip), str(bad), "-o", str(out)])
    assert status == 1
    err = capsys.readouterr().err
    assert f"no folder {out.parent} to write embeddings.npy in" in err
    assert str(bad) not in err


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_cli_keeps_the_old_output_when_writing_the_new_one_fails(
    model_folder: Path,
    clip: Path,
    tmp_path: Path,
    suffix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / f"embeddings{suffix}"
    out.write_bytes(b"an earlier result")

    def half_written(path: object) -> None:
        Path(str(path)).write_bytes(b"half a fil")
        raise OSError(28, "No space left on device")

    if suffix == ".npy":
        monkeypatch.setattr(cli_module.np, "save", lambda file, array: half_written(file))
    else:
        monkeypatch.setattr(
            cli_module, "save_file", lambda tensors, file, metadata=None: half_written(file)
        )
    status = clapkit_cli(["embed", str(model_folder), str(clip), "-o", str(out)])
    assert status == 1
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no partial file left


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"caption": ""}, "'caption' is blank ('')"),
        ({"caption": ["a man says seven", "  "]}, "'caption'[1] is blank ('  ')"),
        ({"caption": "seven", "labels": ["seven", ""]}, "'labels'[1] is blank ('')"),
        ({"caption": None}, "'caption' must be a string or a list of strings, got None"),
        ({"caption": [7]}, "'caption' must be a string or a list of strings, got [7]"),
    ],
)
def test_a_manifest_line_with_a_blank_or_non_text_caption_is_named(
    model: ClapModel, clip: Path, tmp_path: Path, fields: dict[str, object], problem: str
) -> None:
    manifest = tmp_path / "train.jsonl"
    lines = [{"audio": str(clip), "caption": "a man says seven"}, {"audio": "b.wav", **fields}]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ManifestError, match=f"^{re.escape(f'{manifest}:2: {problem}')}$"):
        ManifestDataset(manifest, model.frontend, train=True)
