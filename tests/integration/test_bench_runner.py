"""tools/bench.py on small stand-in scripts: the table, the ratios, and scripts that break the
contract (a crash, no JSON, bad JSON) reported by name while the others still run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
import argparse, json, sys
p = argparse.ArgumentParser(); p.add_argument("--json")
p.add_argument("--quick", action="store_true")
a = p.parse_args()
rows = [{"benchmark": "demo", "case": "quick" if a.quick else "full", "unit": "clips/s",
         "reference": 4.0, "clapkit": 10.0},
        {"benchmark": "demo", "case": "alone", "unit": "clips/s", "reference": None,
         "clapkit": 3.5}]
open(a.json, "w").write(json.dumps({"rows": rows}))
"""
NO_QUICK = """
import argparse, json
p = argparse.ArgumentParser(); p.add_argument("--json")
a = p.parse_args()
row = {"benchmark": "plain", "case": "c", "unit": "clips/s", "reference": 2.0, "clapkit": 1.0}
open(a.json, "w").write(json.dumps({"rows": [row]}))
"""
CRASH = "import sys; print('loading the model'); sys.exit('boom: no weights')"
SILENT = "print('measured, but forgot --json')"
BAD = """
import argparse, json
p = argparse.ArgumentParser(); p.add_argument("--json"); a = p.parse_args()
row = {"benchmark": "bad", "case": "c", "unit": "clips/s", "reference": 1.0, "clapkit": "fast"}
open(a.json, "w").write(json.dumps({"rows": [row]}))
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("clapkit_bench_tool", ROOT / "tools/bench.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def _scripts(tmp_path: Path, **sources: str) -> list[Path]:
    paths = []
    for name, source in sources.items():
        folder = tmp_path / "packages" / name / "benchmarks"
        folder.mkdir(parents=True)
        paths.append(folder / f"bench_{name}.py")
        paths[-1].write_text(source)
    return paths


def test_discovers_every_package_and_recipe_benchmark(bench: ModuleType) -> None:
    found = [p.relative_to(ROOT).as_posix() for p in bench.discover(ROOT)]
    assert "packages/text-encoders/benchmarks/bench_text.py" in found
    assert "recipes/benchmarks/bench_data.py" in found
    assert found == sorted(f for f in found if f.startswith("packages/")) + sorted(
        f for f in found if f.startswith("recipes/")
    )
    groups = {bench.group_of(p) for p in bench.discover(ROOT)}
    assert {"text-encoders", "recipes"} <= groups


def test_table_ratios_and_reported_failures(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = _scripts(tmp_path, good=GOOD, plain=NO_QUICK, crash=CRASH, silent=SILENT, bad=BAD)
    all_json = tmp_path / "all.json"
    args = ["--quick", "--out", str(tmp_path / "out"), "--json", str(all_json)]
    status = bench.main([*args, *map(str, scripts)])
    out, err = capsys.readouterr()

    assert status == 1
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| benchmark"))
    assert [c.strip() for c in lines[header].strip("|").split("|")] == list(bench.COLUMNS)
    table = [[c.strip() for c in line.strip("|").split("|")] for line in lines[header + 2 :]]
    table = [row for row in table if len(row) == len(bench.COLUMNS)]
    # --quick reaches the script that declares it and only that one
    assert table == [
        ["demo", "quick", "clips/s", "4", "10", "2.50x"],
        ["demo", "alone", "clips/s", "-", "3.5", "-"],
        ["plain", "c", "clips/s", "2", "1", "0.50x"],
    ]
    assert "2 of 5 scripts gave rows" in out
    assert "FAILED" in err
    assert "bench_crash.py: exit status 1" in err
    assert "boom: no weights" in err  # the end of the failing script's output
    assert "bench_silent.py: wrote no JSON" in err
    assert "bench_bad.py: bad JSON: rows[0].clapkit is not a number: 'fast'" in err

    written = json.loads(all_json.read_text())
    assert [row["ratio"] for row in written["rows"]] == [2.5, None, 0.5]
    assert set(written["failed"]) == {str(p) for p in scripts[2:]}


def test_only_filters_by_package_folder(bench: ModuleType, tmp_path: Path, capsys) -> None:
    scripts = _scripts(tmp_path, good=GOOD, crash=CRASH)
    assert bench.main([*map(str, scripts), "--only", "good"]) == 0
    out = capsys.readouterr().out
    assert "| demo" in out
    assert "full" in out  # no --quick given
    assert "1 of 1 scripts gave rows" in out
    assert bench.main([*map(str, scripts), "--only", "nothing"]) == 1


def test_timeout_is_a_reported_failure(bench: ModuleType, tmp_path: Path) -> None:
    (script,) = _scripts(
        tmp_path, slow="import time; print('warming up', flush=True); time.sleep(30)"
    )
    outcome = bench.run_script(script, sys.executable, tmp_path, quick=False, timeout=2.0)
    assert outcome.rows == []
    assert outcome.problem == "timed out after 2 s"
    assert "warming up" in outcome.log  # what it printed before it was stopped
    assert "warming up" in (tmp_path / "slow__bench_slow.log").read_text()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], r'not \{"rows"'),
        ({"rows": []}, "no row"),
        ({"rows": [{"benchmark": "b", "case": "c", "unit": "u", "clapkit": True}]}, "clapkit"),
        ({"rows": [{"benchmark": "b", "case": 3, "unit": "u", "clapkit": 1.0}]}, "case"),
    ],
)
def test_contract_violations_are_named(bench: ModuleType, payload: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench.check_rows(payload)
