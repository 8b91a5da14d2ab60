"""Repository guard rails that no linter checks, run by ``nox -s lint``.

- ``clapkit`` stays a PEP 420 namespace: no package ships ``src/clapkit/__init__.py``.
- Every package has its portion ``src/clapkit/<name>/__init__.py``, ``py.typed``, ``README.md``,
  ``CHANGELOG.md`` and ``tests/``.
- Every package holds a copy of the root ``LICENSE`` (its wheel and sdist ship it).
- The top entry of each ``CHANGELOG.md`` is the version in its ``pyproject.toml``.
- The encoder packages import no other clapkit package; no package imports a sibling it does not
  declare as a dependency.
- Sibling pins are compatible ranges (``>=X.Y,<X.Y+1``-style), never exact pins or bare names.
- The repository stands alone: no tracked text file names the folder beside a checkout that held
  the developers' reading material, nor an absolute path of a machine (``/home/...``,
  a root or workspace folder, a Windows user folder): a user's clone has neither.

Exits non-zero listing every problem found.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution name, for every workspace package
IMPORT_TO_DIST = {
    "clapkit.audio": "clapkit-audio-encoders",
    "clapkit.text": "clapkit-text-encoders",
    "clapkit.core": "clapkit-core",
    "clapkit.caption": "clapkit-caption",
    "clapkit.data": "clapkit-datasets",
    "clapkit.train": "clapkit-training",
}
ENCODER_DISTS = {"clapkit-audio-encoders", "clapkit-text-encoders"}
CHANGELOG_ENTRY = re.compile(r"^## \[(?P<version>[^\]]+)\]", re.MULTILINE)
REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_.-]+)(?:\[(?P<extras>[^\]]*)\])?\s*(?P<spec>.*)$"
)


def _declared(project: dict, extras: set[str] | None = None) -> dict[str, tuple[str, set[str]]]:
    """A project's requirements: name -> (version specifier, extras asked of it).

    ``extras=None`` takes every optional-dependency group, else only the named ones.
    """
    requirements = list(project.get("dependencies", []))
    for extra, group in project.get("optional-dependencies", {}).items():
        if extras is None or extra in extras:
            requirements.extend(group)
    declared = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement.split(";")[0])
        if match:
            asked = {e.strip() for e in (match["extras"] or "").split(",") if e.strip()}
            declared[match["name"].lower().replace("_", "-")] = (match["spec"].strip(), asked)
    return declared


def _imported_siblings(source: Path) -> set[str]:
    """The clapkit import names (``clapkit.x``) a source file imports."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "clapkit" and len(parts) > 1:
                found.add(".".join(parts[:2]))
    return found


def check_package(folder: Path) -> list[str]:
    problems = []
    pyproject = tomllib.loads((folder / "pyproject.toml").read_text())
    project = pyproject["project"]
    dist, version = project["name"], project["version"]
    namespace = folder / "src" / "clapkit"
    if (namespace / "__init__.py").exists():
        problems.append(f"{dist}: {namespace / '__init__.py'} breaks the clapkit namespace")
    portions = [p for p in namespace.iterdir() if p.is_dir() and p.name != "__pycache__"]
    if len(portions) != 1:
        problems.append(f"{dist}: expected one portion under {namespace}, found {portions}")
    for portion in portions:
        for required in ("__init__.py", "py.typed"):
            if not (portion / required).exists():
                problems.append(f"{dist}: missing {portion / required}")
    for required in ("README.md", "CHANGELOG.md", "tests"):
        if not (folder / required).exists():
            problems.append(f"{dist}: missing {folder / required}")
    licence = folder / "LICENSE"  # the wheel and sdist carry it (license-files)
    if not licence.is_file() or licence.read_text() != (ROOT / "LICENSE").read_text():
        problems.append(f"{dist}: {licence} is not a copy of the repository's LICENSE")
    changelog = folder / "CHANGELOG.md"
    if changelog.exists():
        entries = [m["version"] for m in CHANGELOG_ENTRY.finditer(changelog.read_text())]
        entries = [e for e in entries if e.lower() != "unreleased"]
        if not entries or entries[0] != version:
            top = entries[0] if entries else None
            problems.append(f"{dist}: CHANGELOG top entry {top!r} != version {version!r}")

    declared = _declared(project)
    for name, (spec, _) in declared.items():
        if name in IMPORT_TO_DIST.values() and not ("<" in spec and ">=" in spec):
            problems.append(f"{dist}: sibling pin {name}{spec!r} is not a compatible range")
    own_import = next((k for k, v in IMPORT_TO_DIST.items() if v == dist), None)
    for source in sorted((folder / "src").rglob("*.py")):
        for imported in _imported_siblings(source) - {own_import}:
            sibling = IMPORT_TO_DIST.get(imported)
            if sibling is None:
                problems.append(f"{source}: imports unknown clapkit portion {imported}")
            elif dist in ENCODER_DISTS:
                problems.append(f"{source}: encoder package imports {imported}")
            elif sibling not in declared and not _declared_transitively(sibling, declared):
                problems.append(
                    f"{source}: imports {imported} but {dist} does not declare {sibling}"
                )
    return problems


def _declared_transitively(sibling: str, declared: dict[str, tuple[str, set[str]]]) -> bool:
    """Whether a declared sibling brings ``sibling`` along, through its base deps or the extras
    asked of it (clapkit-caption declares clapkit-core[audio], which brings the audio encoders)."""
    for folder in (ROOT / "packages").iterdir():
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        if project["name"] in declared:
            _, extras = declared[project["name"]]
            if sibling in _declared(project, extras):
                return True
    return False


# Written in pieces so that this file does not match itself.
OUTSIDE_PATHS = re.compile(
    "|".join(
        (
            r"\.\./" + "shared\\b",
            r"\.parent\s*/\s*[\"']" + "shared[\"']",
            r"(?<![\w.:/~-])/(?:" + "work|home|root|Users|mnt|srv|scratch" + r")/\w",
            r"\b[A-Za-z]:\\\\(?:" + "Users|home" + r")\\\\",
        )
    )
)
# Files whose text is not ours to word: the lock holds registry URLs.
NOT_SCANNED = {"uv.lock"}


def _tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: scan the tree
        listed = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    return [ROOT / name for name in listed if name and name not in NOT_SCANNED]


def check_outside_paths() -> list[str]:
    """Lines of tracked text files that point outside the repository."""
    problems = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary (audio) or deleted in the work tree
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_PATHS.search(line):
                where = path.relative_to(ROOT)
                problems.append(f"{where}:{number}: points outside the repository: {line.strip()}")
    return problems


def main() -> int:
    folders = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
    problems = [problem for folder in folders for problem in check_package(folder)]
    problems += check_outside_paths()
    for problem in problems:
        print(f"check_repo: {problem}", file=sys.stderr)
    print(f"check_repo: {len(folders)} packages checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
