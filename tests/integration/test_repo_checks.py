"""The repository guard of ``tools/check_repo.py``: what it must reject and what it must let by."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check_repo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_repo", ROOT / "tools" / "check_repo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTSIDE = ["/".join(("..", "shared", "reference", "x.json"))]
OUTSIDE += ["/" + "/".join((top, "someone", "data.flac")) for top in ("work", "home", "root")]
OUTSIDE += [
    'folder = repo.parent / "' + "shared" + '" / "reference"',
    "C:" + "\\\\Users\\\\me\\\\a.wav",
]


@pytest.mark.parametrize("line", OUTSIDE)
def test_paths_outside_the_repository_are_found(line: str) -> None:
    assert _check_repo().OUTSIDE_PATHS.search(line), line


@pytest.mark.parametrize(
    "line",
    [
        "data/reference/tokenizers/gpt2/vocab.json",
        "git clone . /tmp/fresh && cd /tmp/fresh",
        "https://github.com/openai/gpt-2/home/x",
        "Path(__file__).resolve().parents[3] / 'data' / 'fsdd'",
        "the sharedness of weights",
    ],
)
def test_paths_inside_the_repository_pass(line: str) -> None:
    assert not _check_repo().OUTSIDE_PATHS.search(line), line


def test_a_tracked_file_naming_an_outside_path_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_repo = _check_repo()
    good, bad = tmp_path / "good.md", tmp_path / "bad.py"
    good.write_text("see data/reference/README.md\n")
    bad.write_text("x = 1\nPATH = '/" + "work/shared/reference'\n")
    monkeypatch.setattr(check_repo, "ROOT", tmp_path)
    monkeypatch.setattr(check_repo, "_tracked_text_files", lambda: [good, bad])
    problems = check_repo.check_outside_paths()
    assert len(problems) == 1
    assert problems[0].startswith("bad.py:2: points outside the repository")
