"""Run every benchmark script of the workspace and print one table of clapkit / reference ratios.

Run from anywhere (``nox -s bench`` does it in an environment with the reference
implementations installed):

    python tools/bench.py [--python PY] [--only text-encoders ...] [--quick] [--json all.json]

Scripts are ``packages/*/benchmarks/*.py`` and ``recipes/benchmarks/*.py``. Each runs in its own
process with ``--json PATH`` (and ``--quick`` when asked and the script has that flag) and must
write ``{"rows": [{"benchmark", "case", "unit", "reference", "clapkit"}, ...]}``, where
``reference`` is the reference implementation measured in the same run or null. A script that
fails, times out or writes no valid JSON is reported by name with the end of its output, and the
others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("benchmark", "case", "unit", "reference", "clapkit", "ratio")
ROW_FIELDS = {"benchmark": str, "case": str, "unit": str}
TAIL_LINES = 15


@dataclass
class Outcome:
    """What one benchmark script gave.

    Attributes:
        script: The script's path relative to the repository root.
        rows: The rows of its JSON, checked.
        problem: Why it gave no usable rows (empty when it did).
        log: Its stdout and stderr.
    """

    script: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""
    log: str = ""


def discover(root: Path = ROOT) -> list[Path]:
    """Every benchmark script of the workspace, in a stable order.

    Args:
        root: The repository root.

    Returns:
        ``packages/*/benchmarks/*.py`` then ``recipes/benchmarks/*.py``, sorted by path.
    """
    scripts = sorted(root.glob("packages/*/benchmarks/*.py"))
    scripts += sorted(root.glob("recipes/benchmarks/*.py"))
    return [s for s in scripts if not s.name.startswith("_")]


def group_of(script: Path) -> str:
    """The name ``--only`` matches: the package folder, or "recipes".

    Args:
        script: A benchmark script path.

    Returns:
        ``"text-encoders"`` for ``packages/text-encoders/benchmarks/x.py``, else the name of
        the folder above ``benchmarks``.
    """
    return script.parent.parent.name


def selected(scripts: Sequence[Path], only: Sequence[str]) -> list[Path]:
    """The scripts whose group or file stem is one of ``only`` (all of them when it is empty)."""
    if not only:
        return list(scripts)
    return [s for s in scripts if group_of(s) in only or s.stem in only]


def check_rows(payload: Any) -> list[dict[str, Any]]:
    """Validate a script's JSON against the bench contract.

    Args:
        payload: The parsed JSON.

    Returns:
        The rows, each with float (or None) ``reference`` and float ``clapkit``.

    Raises:
        ValueError: Naming the first field that breaks the contract.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        raise ValueError('the JSON is not {"rows": [...]}')
    if not payload["rows"]:
        raise ValueError("the JSON holds no row")
    rows = []
    for i, row in enumerate(payload["rows"]):
        if not isinstance(row, dict):
            raise ValueError(f"rows[{i}] is not an object")
        for key, kind in ROW_FIELDS.items():
            if not isinstance(row.get(key), kind):
                raise ValueError(f"rows[{i}].{key} is not a string: {row.get(key)!r}")
        for key in ("reference", "clapkit"):
            value = row.get(key)
            # bool is an int subclass in Python, but never a measured figure
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                if key == "reference" and value is None:
                    continue
                raise ValueError(f"rows[{i}].{key} is not a number: {value!r}")
        rows.append({**row, "ratio": ratio(row["clapkit"], row.get("reference"))})
    return rows


def ratio(clapkit: float, reference: float | None) -> float | None:
    """clapkit / reference, or None when there is no usable reference figure."""
    if reference is None or reference <= 0 or not math.isfinite(reference):
        return None
    return clapkit / reference


def takes_flag(script: Path, flag: str) -> bool:
    """Whether the script's source declares ``flag`` (read, not run: no import of torch)."""
    return f'"{flag}"' in script.read_text(encoding="utf-8")


def run_script(
    script: Path, python: str, out_dir: Path, *, quick: bool, timeout: float, root: Path = ROOT
) -> Outcome:
    """Run one benchmark script with ``--json`` and read its rows.

    Args:
        script: The script.
        python: The interpreter to run it with.
        out_dir: Where its JSON and log go.
        quick: Pass ``--quick`` when the script declares it.
        timeout: Seconds before the script is stopped.
        root: The working directory (the repository root).

    Returns:
        Its rows, or the problem that left it without any.
    """
    name = str(script.relative_to(root)) if script.is_relative_to(root) else str(script)
    json_path = out_dir / f"{group_of(script)}__{script.stem}.json"
    command = [python, str(script), "--json", str(json_path)]
    if quick and takes_flag(script, "--quick"):
        command.append("--quick")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    print(f"[bench] {' '.join([Path(python).name, *command[1:]])}", flush=True)
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        log = "".join(_text(part) for part in (error.stdout, error.stderr))
        (out_dir / f"{json_path.stem}.log").write_text(log, encoding="utf-8")
        return Outcome(name, problem=f"timed out after {timeout:.0f} s", log=log)
    log = done.stdout + done.stderr
    (out_dir / f"{json_path.stem}.log").write_text(log, encoding="utf-8")
    if done.returncode != 0:
        return Outcome(name, problem=f"exit status {done.returncode}", log=log)
    if not json_path.is_file():
        return Outcome(name, problem="wrote no JSON (does it honour --json?)", log=log)
    try:
        rows = check_rows(json.loads(json_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError) as error:
        return Outcome(name, problem=f"bad JSON: {error}", log=log)
    return Outcome(name, rows=rows, log=log)


def _text(output: str | bytes | None) -> str:
    """A child's captured output as text (a timeout hands it back as bytes)."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key == "ratio":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """One Markdown table: benchmark | case | unit | reference | clapkit | ratio.

    Args:
        rows: Checked rows (with ``ratio``).

    Returns:
        The table, columns padded to their widest cell.
    """
    cells = [list(COLUMNS)] + [[_cell(row.get(key), key) for key in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    padded = [[c.ljust(w) for c, w in zip(line, widths, strict=True)] for line in cells]
    lines = ["| " + " | ".join(line) + " |" for line in padded]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks, print the table and the problems.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when every script gave rows, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the scripts")
    parser.add_argument(
        "--only", nargs="+", default=[], help="package folders or script stems, e.g. datasets"
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick where declared")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per script")
    parser.add_argument("--out", type=Path, help="folder for JSON and logs (default: a temp one)")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("scripts", nargs="*", type=Path, help="scripts (default: discover)")
    args = parser.parse_args(argv)

    scripts = selected([s.resolve() for s in args.scripts] or discover(), args.only)
    if not scripts:
        print(f"[bench] no benchmark script matches {args.only}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="clapkit-bench-") as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        outcomes = [
            run_script(s, args.python, out_dir, quick=args.quick, timeout=args.timeout)
            for s in scripts
        ]
    rows = [row for outcome in outcomes for row in outcome.rows]
    print("\nratio = clapkit / reference, both measured in the same run\n")
    print(format_table(rows) if rows else "(no rows)")
    failed = [outcome for outcome in outcomes if outcome.problem]
    for outcome in failed:
        tail = "\n".join(outcome.log.rstrip().splitlines()[-TAIL_LINES:])
        print(f"\n[bench] FAILED {outcome.script}: {outcome.problem}\n{tail}", file=sys.stderr)
    print(f"\n[bench] {len(outcomes) - len(failed)} of {len(outcomes)} scripts gave rows")
    if args.json is not None:
        payload = {"rows": rows, "failed": {o.script: o.problem for o in failed}}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
