"""``clapkit caption``: the core command finds the captioner by name and prints its captions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clapkit.caption import ClapCaptioner
from clapkit.core.cli import main

from .conftest import FSDD


def test_caption_command_prints_the_captioners_captions(
    captioner: ClapCaptioner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captioner.save_pretrained(tmp_path / "captioner")
    files = [str(FSDD / "7_theo_3.flac"), str(FSDD / "0_jackson_10.flac")]
    expected = captioner.generate(files, beam_size=2, max_new_tokens=4)
    command = ["caption", str(tmp_path / "captioner"), *files, "--beam-size", "2"]
    command += ["--max-new-tokens", "4", "--quiet"]
    assert main([*command, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records == [{"file": f, "caption": c} for f, c in zip(files, expected, strict=True)]
    assert main([*command, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "file,caption"


def test_captioning_pipeline_is_found_by_name(captioner: ClapCaptioner, tmp_path: Path) -> None:
    from clapkit.core import pipeline

    captioner.save_pretrained(tmp_path / "captioner")
    pipe = pipeline("audio-captioning", model=tmp_path / "captioner")
    files = [str(FSDD / "7_theo_3.flac"), str(FSDD / "0_jackson_10.flac")]
    expected = captioner.generate(files, beam_size=2, max_new_tokens=4)
    assert pipe(files[0], beam_size=2, max_new_tokens=4) == [{"generated_text": expected[0]}]
    assert pipe(files, beam_size=2, max_new_tokens=4) == [[{"generated_text": c}] for c in expected]
