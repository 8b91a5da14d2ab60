"""METEOR and SPICE through their Java programs, when those are installed.

Neither metric has a faithful Python port; the reference numbers come from ``meteor-1.5.jar``
and ``spice-1.0.jar`` (SPICE also needs Stanford CoreNLP 3.6.0 in its ``lib/``). clapkit finds
a jar given as an argument, else in ``$CLAPKIT_METEOR_JAR`` / ``$CLAPKIT_SPICE_JAR``, else inside
an installed ``pycocoevalcap`` package, and runs it with the ``java`` on ``PATH``. When
something is missing, :class:`JavaToolMissingError` says what and how to provide it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

_JARS = {
    "meteor": ("CLAPKIT_METEOR_JAR", "meteor/meteor-1.5.jar"),
    "spice": ("CLAPKIT_SPICE_JAR", "spice/spice-1.0.jar"),
    "ptb": ("CLAPKIT_PTB_JAR", "tokenizer/stanford-corenlp-3.4.1.jar"),
}


class JavaToolMissingError(RuntimeError):
    """A Java metric cannot run: no ``java`` on PATH or no jar found."""


def find_jar(metric: str, jar: str | Path | None = None) -> Path:
    """Locate the jar of ``metric`` and check that ``java`` exists.

    Args:
        metric: ``"meteor"``, ``"spice"`` or ``"ptb"`` (Stanford's PTB tokenizer).
        jar: Explicit path; else ``$CLAPKIT_<METRIC>_JAR``; else the copy in ``pycocoevalcap``.

    Returns:
        Path of the jar.

    Raises:
        JavaToolMissingError: Naming what is missing (java, or the jar and where it was looked for).
        ValueError: On an unknown metric.
    """
    if metric not in _JARS:
        raise ValueError(f"unknown Java metric {metric!r}; known: {sorted(_JARS)}")
    variable, inside_package = _JARS[metric]
    if shutil.which("java") is None:
        raise JavaToolMissingError(
            f"{metric.upper()} needs a Java runtime (`java` on PATH), which was not found; "
            "install one (e.g. `apt-get install default-jre-headless`) or leave this metric out"
        )
    candidates: list[Path] = []
    if jar is not None:
        candidates.append(Path(jar))
    elif os.environ.get(variable):
        candidates.append(Path(os.environ[variable]))
    else:
        spec = importlib.util.find_spec("pycocoevalcap")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p) / inside_package for p in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nowhere (no path given)"
    raise JavaToolMissingError(
        f"{metric.upper()} needs {Path(inside_package).name}; looked in {looked}. Pass its "
        f"path, set ${variable}, or `pip install pycocoevalcap` (which ships it"
        + (
            " but not the Stanford CoreNLP 3.6.0 jars SPICE also needs in its lib/)"
            if metric == "spice"
            else ")"
        )
    )


def meteor(
    predictions: Sequence[str], references: Sequence[Sequence[str]], jar: str | Path | None = None
) -> tuple[float, list[float]]:
    """METEOR 1.5 (English, normalised) through ``meteor-1.5.jar``'s stdio protocol.

    Args:
        predictions: Tokenised predictions, tokens joined by spaces.
        references: Their tokenised references.
        jar: Path of ``meteor-1.5.jar`` (see :func:`find_jar`).

    Returns:
        ``(corpus, per_item)`` as the jar computes them.

    Raises:
        JavaToolMissingError: When java or the jar is missing.
        RuntimeError: When the program fails (with its error output).
    """
    path = find_jar("meteor", jar)
    command = ["java", "-jar", "-Xmx2G", str(path), "-", "-", "-stdio", "-l", "en", "-norm"]
    lines = []
    for prediction, refs in zip(predictions, references, strict=True):
        fields = [_clean(r) for r in refs] + [_clean(prediction)]
        lines.append("SCORE ||| " + " ||| ".join(fields))
    with subprocess.Popen(
        command,
        cwd=path.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        stats = []
        for line in lines:
            process.stdin.write(line + "\n")
            process.stdin.flush()
            stats.append(process.stdout.readline().strip())
        process.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
        process.stdin.flush()
        try:
            per_item = [float(process.stdout.readline()) for _ in lines]
            corpus = float(process.stdout.readline())
        except ValueError as error:
            process.kill()
            raise RuntimeError(
                f"METEOR ({path}) failed: {process.stderr.read() if process.stderr else ''}"
            ) from error
        process.stdin.close()
    return corpus, per_item


def spice(
    predictions: Sequence[str], references: Sequence[Sequence[str]], jar: str | Path | None = None
) -> tuple[float, list[float]]:
    """SPICE F-score through ``spice-1.0.jar`` (JSON in, JSON out).

    Args:
        predictions: Tokenised predictions, tokens joined by spaces.
        references: Their tokenised references.
        jar: Path of ``spice-1.0.jar`` (its ``lib/`` must hold Stanford CoreNLP 3.6.0).

    Returns:
        ``(corpus mean of the "All" F-scores, per_item)``.

    Raises:
        JavaToolMissingError: When java or the jar is missing.
        RuntimeError: When the program fails (with its error output).
    """
    path = find_jar("spice", jar)
    items = [
        {"image_id": index, "test": prediction, "refs": list(refs)}
        for index, (prediction, refs) in enumerate(zip(predictions, references, strict=True))
    ]
    with tempfile.TemporaryDirectory(prefix="clapkit-spice-") as folder:
        source, target = Path(folder) / "input.json", Path(folder) / "output.json"
        source.write_text(json.dumps(items))
        command = ["java", "-jar", "-Xmx8G", str(path), str(source), "-out", str(target)]
        result = subprocess.run(
            [*command, "-subset", "-silent"], cwd=path.parent, capture_output=True, text=True
        )
        if result.returncode != 0 or not target.is_file():
            raise RuntimeError(f"SPICE ({path}) failed: {result.stderr.strip()[-2000:]}")
        scores = {
            row["image_id"]: row["scores"]["All"]["f"] for row in json.loads(target.read_text())
        }
    per_item = [float(scores[index]) for index in range(len(items))]
    return sum(per_item) / len(per_item), per_item


def _clean(caption: str) -> str:
    # "|||" separates fields in METEOR's protocol
    return " ".join(caption.replace("|||", " ").split())
