"""The READMEs' commands work: every block marked ``<!-- check: commands -->`` is run, and every
``nox -s`` session a README names exists."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMES = sorted([ROOT / "README.md", ROOT / "recipes" / "README.md",
                  *ROOT.glob("packages/*/README.md")])  # fmt: skip


def _readme_blocks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_blocks", ROOT / "tools/readme_blocks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_blocks"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


BLOCKS = _readme_blocks()
WITH_COMMANDS = [r for r in READMES if any(b.kind == "commands" for b in BLOCKS.checked_blocks(r))]


def test_some_readme_marks_commands() -> None:
    assert ROOT / "packages" / "clap-core" / "README.md" in WITH_COMMANDS


# slow: each command is a fresh process importing torch and transformers (~5 s each on 2 cores)
@pytest.mark.slow
@pytest.mark.parametrize("readme", WITH_COMMANDS, ids=lambda p: p.parent.name)
def test_marked_commands_run(readme: Path, tmp_path: Path) -> None:
    """The README's examples run first (in order, in one folder), then each marked command."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for block in BLOCKS.checked_blocks(readme):
        if block.kind == "example":
            script = tmp_path / "example.py"
            script.write_text(block.code)
            result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=300)  # fmt: skip
            assert result.returncode == 0, f"{block.source}:\n{result.stderr[-3000:]}"
            continue
        for line in block.code.splitlines():
            command = line.split("  #")[0].strip()
            if not command or command.startswith("#"):
                continue
            result = subprocess.run(shlex.split(command), cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=300)  # fmt: skip
            assert result.returncode == 0, f"{block.source}: `{command}`\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, command


def _nox_sessions() -> set[str]:
    """The session names ``nox -l`` prints, read from noxfile.py (nox is not installed here)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    names, packages = set(), []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            ast.unparse(d).startswith("nox.session") for d in node.decorator_list
        ):
            names.add(node.name)
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "PACKAGES":
            assert isinstance(node.value, ast.Dict)
            packages = [ast.literal_eval(k) for k in node.value.keys if k is not None]
    assert "tests" in names
    assert packages
    names.discard("tests")
    return names | {f"tests(package='{p}')" for p in packages}


def test_every_nox_session_a_readme_names_exists() -> None:
    sessions = _nox_sessions()
    assert "wheels" in sessions
    named = re.compile(r"nox -s (\"[^\"]+\"|'[^']+'|[\w()=',-]+)")
    for readme in READMES:
        for match in named.finditer(readme.read_text()):
            for name in match.group(1).strip("\"'").split():
                assert name in sessions, f"{readme}: nox -s {name}: no such session"
