"""Ship the repository's recipes in the clapkit-training wheel (``clapkit/train/recipes/``).

The recipes live at the repository root (``recipes/``), beside the packages. Building from the
workspace they are two folders up; building the wheel from the sdist they are in the sdist's
own ``recipes/`` (put there by this hook when the sdist was built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SHIPPED = ("*.py", "README.md", "configs/*.yaml")


class RecipesHook(BuildHookInterface):  # type: ignore[misc]
    """Force-include the recipe scripts, their README and the accelerate configs."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        source = next(
            (p for p in (root / "recipes", root.parent.parent / "recipes") if p.is_dir()), None
        )
        if source is None:
            raise FileNotFoundError(f"no recipes/ folder beside or two above {root}")
        target = "clapkit/train/recipes" if self.target_name == "wheel" else "recipes"
        for pattern in SHIPPED:
            for path in sorted(source.glob(pattern)):
                relative = path.relative_to(source).as_posix()
                build_data["force_include"][str(path)] = f"{target}/{relative}"
