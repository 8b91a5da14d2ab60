"""Developer and CI sessions for the clapkit workspace.

``nox`` (no arguments) runs the default sessions, which are exactly what CI runs. Every session
installs from ``uv.lock`` with ``uv sync --locked`` into its own virtual environment, so a
session sees only what it asks for: ``tests(audio-encoders)`` holds that package and its declared
dependencies and nothing else, which is how an undeclared import of a sibling is caught.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "tests",
    "integration",
    "robustness",
    "recipes",
    "scale",
    "parity",
    "wheels",
    "docs",
]

ROOT = Path(__file__).parent
# folder -> (distribution, extras its own tests need)
PACKAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "audio-encoders": ("clapkit-audio-encoders", ("ffmpeg",)),  # M4A/AAC decoding is tested
    "text-encoders": ("clapkit-text-encoders", ()),
    "clap-core": ("clapkit-core", ("all",)),
    "clap-caption": ("clapkit-caption", ()),
    "datasets": ("clapkit-datasets", ()),
    "training": ("clapkit-training", ()),
}
PYTEST_BASE = ("-q", "-p", "no:cacheprovider")
# pytest-xdist: a worker per CPU core, each test file whole on one worker
PARALLEL = ("-n", "auto", "--dist", "loadfile")


def _sync(session: nox.Session, *args: str) -> None:
    """Install exactly what ``uv.lock`` says for the given selection into the session's venv."""
    env = {"UV_PROJECT_ENVIRONMENT": str(session.virtualenv.location)}
    session.run_install("uv", "sync", "--locked", "--no-default-groups", *args, env=env)


def _pytest(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "pytest", *PYTEST_BASE, *args, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format and check, lock freshness, repo checks, import layering contracts."""
    _sync(session, "--only-group", "lint")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")
    session.run("uv", "lock", "--check", external=True)
    session.run("python", "tools/check_repo.py")
    # import-linter reads the sources statically: the layer contracts in pyproject.toml
    sources = os.pathsep.join(sorted(str(p) for p in ROOT.glob("packages/*/src")))
    session.run("lint-imports", env={"PYTHONPATH": sources})


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the sources of every package."""
    _sync(session, "--all-packages", "--all-extras", "--group", "lint")
    session.run("mypy", *sorted(str(p) for p in ROOT.glob("packages/*/src")))


@nox.session
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package's unit tests, in an environment holding only it and its dependencies."""
    dist, extras = PACKAGES[package]
    _sync(session, "--package", dist, "--group", "test", *(f"--extra={e}" for e in extras))
    _pytest(session, f"packages/{package}/tests", "-m", "not parity and not slow")


@nox.session
def integration(session: nox.Session) -> None:
    """All packages together: every encoder pair, save/load round trips, the CLI."""
    if not any((ROOT / "tests/integration").glob("test_*.py")):
        session.error("tests/integration holds no test")
    _sync(session, "--all-packages", "--all-extras", "--group", "test")
    _pytest(session, "tests/integration", "-m", "not parity")


@nox.session
def robustness(session: nox.Session) -> None:
    """The bad-input corpus: every bad input named, nothing lost, through the API and the CLI."""
    _sync(session, "--all-packages", "--all-extras", "--group", "test")
    _pytest(session, "tests/robustness")


@nox.session
def recipes(session: nox.Session) -> None:
    """Each recipe on its tiny preset under accelerate, resume included.

    The tests run the recipes in subprocesses of one thread each; pytest-xdist runs one test
    file per CPU core at a time (a file's tests share its fixtures' runs).
    """
    if not any((ROOT / "recipes/tests").glob("test_*.py")):
        session.skip("no recipe has tests yet")
    _sync(session, "--all-packages", "--all-extras", "--group", "test", "--group", "recipes")
    _pytest(session, *PARALLEL, "recipes/tests")


@nox.session
def scale(session: nox.Session) -> None:
    """Every preset of every training recipe at the paper's model size on two gloo processes.

    Random weights, text towers saved locally at their real sizes, tiny batches: two updates,
    a checkpoint and the epoch's end each, gradients and identical weights on both processes
    checked, one resume per recipe (``tests/scale``).
    """
    _sync(session, "--all-packages", "--all-extras", "--group", "test", "--group", "recipes")
    session.env["HF_HUB_OFFLINE"] = "1"
    _pytest(session, "tests/scale")


@nox.session
def parity(session: nox.Session) -> None:
    """Numbers against the reference implementations, installed here and never in the lock."""
    suites = sorted(
        str(p) for p in ROOT.glob("packages/*/tests/parity") if any(p.glob("test_*.py"))
    )
    if not suites:
        session.skip("no parity suite yet")
    _sync(session, "--all-packages", "--all-extras", "--group", "test")
    session.install("--no-deps", "-r", "tools/parity-references.txt")
    session.install("-r", "tools/parity-deps.txt")
    session.env["HF_HUB_OFFLINE"] = "1"
    session.env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    _pytest(session, *suites, "-m", "parity")


@nox.session
def wheels(session: nox.Session) -> None:
    """Every wheel alone: built, inspected, installed fresh (and with each extra), tried.

    ``tools/check_wheels.py`` builds each package's wheel and sdist with uv, checks that they
    carry the LICENSE, README, project URLs and classifiers, installs each wheel into a fresh
    environment holding only its declared dependencies (versions from ``uv.lock``, siblings from
    the wheels just built), imports it, runs its README's marked example and every clapkit
    command's ``--help``. Arguments go to the script: ``nox -s wheels -- --only clap-core``.
    """
    session.run("python", "tools/check_wheels.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs-material + mkdocstrings), built with warnings as errors.

    ``mkdocs.yml`` sets ``strict: true``: a docstring reference that resolves to nothing, a
    docstring griffe cannot parse, a missing page or snippet fails the build. The API reference
    is read from the sources statically, so no package is installed.
    """
    _sync(session, "--only-group", "docs")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    site = session.create_tmp()
    session.run("mkdocs", "build", "--strict", "--site-dir", os.path.join(site, "site"))


@nox.session
def bench(session: nox.Session) -> None:
    """Every package's benchmark and the recipes' in one run: one table of clapkit / reference.

    The reference implementations are installed as in ``parity``. Arguments go to
    ``tools/bench.py``: ``nox -s bench -- --only text-encoders --quick``.
    """
    _sync(session, "--all-packages", "--all-extras", "--group", "test", "--group", "recipes")
    session.install("--no-deps", "-r", "tools/parity-references.txt")
    session.install("-r", "tools/parity-deps.txt")
    session.env["HF_HUB_OFFLINE"] = "1"
    session.env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    session.run("python", "tools/bench.py", *session.posargs)
