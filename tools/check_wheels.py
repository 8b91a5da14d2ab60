"""Every wheel alone: build each package, install it fresh, import it, run its README example.

Run by ``nox -s wheels`` (``python tools/check_wheels.py [--out DIR] [--only FOLDER ...]``):

1. ``uv build`` writes every package's wheel and sdist into ``OUT/dist``.
2. Each archive must carry the LICENSE, the package README as its description, project URLs
   and classifiers.
3. Each wheel is installed into a fresh ``uv venv`` with only its declared dependencies (and once
   more with each of its extras). Third-party versions are constrained to ``uv.lock`` (no new
   torch is downloaded); sibling clapkit packages come from ``OUT/dist`` only (``--find-links``
   plus a constraint naming the file, so an index can never supply one). In each environment:
   the installed clapkit distributions must be exactly the declared closure, the package must
   import, every installed clapkit command must answer ``--help``, and the README's examples
   marked for that extra (``tools/readme_blocks.py``) must run.

Exits non-zero listing every problem found.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_blocks import checked_blocks  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent.parent
WANTED_URLS = {"Homepage", "Source", "Changelog", "Issues"}
_NOX_UV_VARIABLES = ("UV_PYTHON", "UV_PROJECT_ENVIRONMENT", "UV_SYSTEM_PYTHON")


@dataclass(frozen=True)
class Package:
    """A workspace package as its pyproject.toml declares it."""

    folder: Path
    dist: str
    version: str
    import_name: str
    requires: tuple[str, ...]
    extras: dict[str, tuple[str, ...]]
    scripts: tuple[str, ...]

    @property
    def stem(self) -> str:
        """The archive file name stem (``clapkit_core-0.3.1``)."""
        return f"{self.dist.replace('-', '_')}-{self.version}"


def _name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0]


def _extras_of(requirement: str) -> tuple[str, ...]:
    if "[" not in requirement:
        return ()
    return tuple(e.strip() for e in requirement.split("[", 1)[1].split("]")[0].split(","))


def read_packages() -> dict[str, Package]:
    """Every package of the workspace, by distribution name."""
    found = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        portions = [p.name for p in (pyproject.parent / "src" / "clapkit").iterdir() if p.is_dir()]
        found[project["name"]] = Package(
            folder=pyproject.parent,
            dist=project["name"],
            version=project["version"],
            import_name=f"clapkit.{portions[0]}",
            requires=tuple(project.get("dependencies", [])),
            extras={k: tuple(v) for k, v in project.get("optional-dependencies", {}).items()},
            scripts=tuple(project.get("scripts", {})),
        )
    return found


def closure(packages: dict[str, Package], dist: str, extra: str | None) -> set[str]:
    """The clapkit distributions that installing ``dist[extra]`` must bring, itself included."""
    start: tuple[str, ...] = (extra,) if extra else ()
    wanted: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(dist, start)]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in wanted:
            continue
        wanted.add((name, extras))
        package = packages[name]
        requirements = list(package.requires)
        for chosen in extras:
            requirements += package.extras[chosen]
        todo += [(_name(r), _extras_of(r)) for r in requirements if _name(r) in packages]
    return {name for name, _ in wanted}


def check_archives(package: Package, dist_dir: Path) -> list[str]:
    """LICENSE, README, URLs and classifiers in the wheel and the sdist."""
    problems = []
    license_text = (ROOT / "LICENSE").read_text()
    wheel = dist_dir / f"{package.stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        info = f"{package.stem}.dist-info"
        names = set(archive.namelist())
        licence = f"{info}/licenses/LICENSE"
        if licence not in names or archive.read(licence).decode() != license_text:
            problems.append(f"{wheel.name}: no {licence} equal to the repository's LICENSE")
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    readme = (package.folder / "README.md").read_text()
    if str(metadata.get_payload()).strip() != readme.strip():
        problems.append(f"{wheel.name}: the description is not {package.folder.name}/README.md")
    if metadata["Description-Content-Type"] != "text/markdown":
        problems.append(f"{wheel.name}: description content type is not text/markdown")
    if metadata["License-Expression"] != "MIT":
        problems.append(f"{wheel.name}: License-Expression is {metadata['License-Expression']}")
    urls = {url.split(",")[0].strip() for url in metadata.get_all("Project-URL") or []}
    if not urls >= WANTED_URLS:
        problems.append(f"{wheel.name}: project URLs lack {sorted(WANTED_URLS - urls)}")
    if len(metadata.get_all("Classifier") or []) < 3:
        problems.append(f"{wheel.name}: fewer than 3 classifiers")
    sdist = dist_dir / f"{package.stem}.tar.gz"
    with tarfile.open(sdist) as archive:
        members = set(archive.getnames())
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"):
        if f"{package.stem}/{needed}" not in members:
            problems.append(f"{sdist.name}: no {needed}")
    return problems


def write_constraints(packages: dict[str, Package], dist_dir: Path, path: Path) -> None:
    """uv.lock's third-party pins plus every sibling pinned to its freshly built wheel."""
    exported = subprocess.run(
        ["uv", "export", "--frozen", "--all-packages", "--all-extras", "--all-groups",
         "--no-hashes", "--no-emit-workspace", "--no-header", "--no-annotate"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    siblings = [
        f"{p.dist} @ {(dist_dir / f'{p.stem}-py3-none-any.whl').as_uri()}"
        for p in packages.values()
    ]
    path.write_text(exported + "\n".join(siblings) + "\n")


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str | None:
    """Run a command; ``None`` on success, else its last output lines."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    tail = (result.stdout + result.stderr).strip().splitlines()[-12:]
    return "\n    ".join(tail)


def check_environment(
    packages: dict[str, Package], package: Package, extra: str | None, out: Path
) -> list[str]:
    """Install one wheel (with one extra) fresh and try it; the problems found."""
    label = f"{package.dist}[{extra}]" if extra else package.dist
    venv = out / "envs" / (f"{package.dist}-{extra}" if extra else package.dist)
    # nox points UV_PYTHON / UV_PROJECT_ENVIRONMENT at the session's own venv: drop them and
    # name the fresh environment's interpreter explicitly
    env = {k: v for k, v in os.environ.items() if k not in _NOX_UV_VARIABLES}
    subprocess.run(["uv", "venv", "--quiet", "--clear", "--python", sys.executable, str(venv)],
                   check=True, env=env)  # fmt: skip
    python = venv / "bin" / "python"
    env |= {"VIRTUAL_ENV": str(venv), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # as if activated
    env.pop("PYTHONPATH", None)
    install = ["uv", "pip", "install", "--quiet", "--python", str(python)]
    install += ["--find-links", str(out / "dist"), "--constraint", str(out / "constraints.txt")]
    install.append(label)
    failure = _run(install, cwd=out, env=env)
    if failure:
        return [f"{label}: install failed:\n    {failure}"]
    problems = []
    listed = subprocess.run(
        ["uv", "pip", "list", "--python", str(python), "--format", "freeze"],
        env=env, capture_output=True, text=True,
    ).stdout  # fmt: skip
    installed = {line.split("==")[0].split(" @ ")[0] for line in listed.splitlines()}
    present = {name for name in installed if name in packages}
    expected = closure(packages, package.dist, extra)
    if present != expected:
        problems.append(f"{label}: installs clapkit {sorted(present)}, declared {sorted(expected)}")
    if failure := _run([str(python), "-c", f"import {package.import_name}"], cwd=out, env=env):
        problems.append(f"{label}: import {package.import_name} failed:\n    {failure}")
    for name in sorted(present):
        for script in packages[name].scripts:
            if failure := _run([str(venv / "bin" / script), "--help"], cwd=out, env=env):
                problems.append(f"{label}: `{script} --help` failed:\n    {failure}")
    for block in checked_blocks(package.folder / "README.md"):
        if block.kind != "example" or block.extra != extra:
            continue
        with tempfile.TemporaryDirectory(dir=out) as work:
            script_file = Path(work) / "example.py"
            script_file.write_text(block.code)
            if failure := _run([str(python), str(script_file)], cwd=Path(work), env=env):
                problems.append(f"{label}: the example at {block.source} failed:\n    {failure}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Build, inspect, install and try every wheel; 1 when any problem is found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".nox" / "wheels")
    parser.add_argument("--only", nargs="*", help="package folders to check (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="environments checked at once")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    dist_dir = out / "dist"
    packages = read_packages()
    chosen = [p for p in packages.values() if not args.only or p.folder.name in args.only]
    start = time.perf_counter()
    subprocess.run(["rm", "-rf", str(dist_dir)], check=True)
    subprocess.run(
        ["uv", "build", "--quiet", "--all-packages", "--out-dir", str(dist_dir)],
        cwd=ROOT, check=True,
    )  # fmt: skip
    write_constraints(packages, dist_dir, out / "constraints.txt")
    problems = [problem for package in chosen for problem in check_archives(package, dist_dir)]

    def check(package: Package, extra: str | None) -> list[str]:
        began = time.perf_counter()
        found = check_environment(packages, package, extra, out)
        status = "ok" if not found else f"{len(found)} problem(s)"
        label = f"{package.dist}[{extra}]" if extra else package.dist
        print(f"{label}: {status} ({time.perf_counter() - began:.1f} s)", flush=True)
        return found

    # installing is mostly waiting on the disk, importing torch on a core: two at a time
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = [pool.submit(check, p, e) for p in chosen for e in (None, *p.extras)]
        problems += [problem for run in runs for problem in run.result()]
    print(f"checked {len(chosen)} packages in {time.perf_counter() - start:.0f} s")
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
