"""The fenced blocks of a README that a check runs, found by the marker line above each.

A block is checked when the line before its opening fence is one of::

    <!-- check: example -->          python, run in a fresh install of the package's wheel
    <!-- check: example [all] -->    the same, installed with that extra
    <!-- check: commands -->         bash, every command run by tests/integration

``tools/check_wheels.py`` (the ``wheels`` nox session) runs the examples;
``tests/integration/test_readme_commands.py`` runs the commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CheckedBlock", "checked_blocks"]

MARKER = re.compile(r"^<!-- check: (?P<kind>example|commands)(?: \[(?P<extra>[\w-]+)\])? -->$")
FENCE = re.compile(r"^```(?P<language>\w*)\s*$")


@dataclass(frozen=True)
class CheckedBlock:
    """One marked fenced block.

    Attributes:
        kind: ``"example"`` (python) or ``"commands"`` (bash).
        extra: the extra to install the package with (examples), or ``None``.
        code: the block's text.
        source: ``README.md:LINE`` of the opening fence, for messages.
    """

    kind: str
    extra: str | None
    code: str
    source: str


def checked_blocks(readme: Path) -> list[CheckedBlock]:
    """Every marked block of a README, in order.

    Args:
        readme: the Markdown file.

    Returns:
        The blocks.

    Raises:
        ValueError: a marker not followed by a fenced block of the right language, or a block
            never closed, named by file and line.
    """
    lines = readme.read_text(encoding="utf-8").splitlines()
    blocks = []
    for number, line in enumerate(lines):
        marker = MARKER.match(line.strip())
        if marker is None:
            continue
        where = f"{readme}:{number + 2}"
        fence = FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
        wanted = "python" if marker["kind"] == "example" else "bash"
        if fence is None or fence["language"] != wanted:
            kind = marker["kind"]
            raise ValueError(f"{where}: a '{kind}' marker must precede a ```{wanted} block")
        try:
            end = lines.index("```", number + 2)
        except ValueError:
            raise ValueError(f"{where}: the fenced block is never closed") from None
        code = "\n".join(lines[number + 2 : end]) + "\n"
        blocks.append(CheckedBlock(marker["kind"], marker["extra"], code, where))
    return blocks
