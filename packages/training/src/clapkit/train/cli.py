"""The ``clapkit-train`` command: the recipes from an install (torchtune's ``tune run/ls/cp``).

``clapkit-train ls`` lists the recipes and their presets, ``clapkit-train cp RECIPE DIR`` copies
one out for editing, ``clapkit-train run RECIPE [accelerate args] -- [recipe args]`` launches one
through ``accelerate launch``. The recipes ship in the wheel (``clapkit/train/recipes/``); in a
clone (an editable install) they are the repository's ``recipes/``, so the clone's commands
(``accelerate launch recipes/pretrain_clap.py ...``) and these run the same files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import import_module, resources
from pathlib import Path

__all__ = ["RECIPE_PRESETS", "launch_command", "list_recipes", "main", "recipes_folder"]

# recipe -> the module of its presets and the function building them (evaluate.py has suites)
RECIPE_PRESETS: Mapping[str, tuple[str, str]] = {
    "pretrain_clap": ("clapkit.train.presets.clap", "pretraining_presets"),
    "pretrain_htsat22": ("clapkit.train.presets.htsat22", "htsat22_presets"),
    "train_captioner": ("clapkit.train.presets.captioning", "captioning_presets"),
    "finetune_audio": ("clapkit.train.presets.finetune", "finetune_presets"),
}


def recipes_folder() -> Path:
    """Where the recipes are: the wheel's copy, else the clone's ``recipes/``.

    Raises:
        FileNotFoundError: neither exists (an install built without its recipes).
    """
    shipped = Path(str(resources.files("clapkit.train"))) / "recipes"
    if (shipped / "pretrain_clap.py").is_file():
        return shipped
    clone = Path(__file__).resolve().parents[5] / "recipes"  # packages/training/src/clapkit/train
    if (clone / "pretrain_clap.py").is_file():
        return clone
    raise FileNotFoundError(f"no recipes in {shipped} nor in {clone}")


def list_recipes() -> dict[str, Path]:
    """Recipe name -> its file."""
    return {path.stem: path for path in sorted(recipes_folder().glob("*.py"))}


def _recipe(name: str) -> Path:
    recipes = list_recipes()
    stem = name.removesuffix(".py")
    if stem not in recipes:
        raise KeyError(f"no recipe {name!r}; the recipes are {sorted(recipes)}")
    return recipes[stem]


def _presets(name: str) -> list[str]:
    if name not in RECIPE_PRESETS:
        return []
    module, builder = RECIPE_PRESETS[name]
    return list(getattr(import_module(module), builder)())


def _first_line(path: Path) -> str:
    text = path.read_text()
    start = text.find('"""')
    return text[start + 3 :].split("\n")[0].strip() if start >= 0 else ""


def launch_command(
    recipe: Path, accelerate_args: Sequence[str], recipe_args: Sequence[str]
) -> list[str]:
    """The ``accelerate launch`` command line of a recipe.

    Args:
        recipe: the recipe file.
        accelerate_args: arguments of ``accelerate launch`` (``--num_processes 2``, ...).
        recipe_args: the recipe's own arguments (``--preset smoke``, ...).

    Returns:
        The command, run with this Python.
    """
    return [sys.executable, "-m", "accelerate.commands.launch", *accelerate_args, str(recipe),
            *recipe_args]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``clapkit-train``.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: the recipe's for ``run``; 1 with one line for an unknown recipe or a
        refused copy.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    recipe_args: list[str] = []
    if "--" in args_list:
        split = args_list.index("--")
        args_list, recipe_args = args_list[:split], args_list[split + 1 :]
    parser = argparse.ArgumentParser(
        prog="clapkit-train",
        description="clapkit's training and evaluation recipes, from an install.",
        epilog="example: clapkit-train run pretrain_clap --num_processes 2 -- --preset smoke",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ls", help="list the recipes and their presets")
    copy = commands.add_parser("cp", help="copy a recipe out for editing")
    copy.add_argument("recipe")
    copy.add_argument("folder", type=Path)
    copy.add_argument("--force", action="store_true", help="replace an existing copy")
    run = commands.add_parser(
        "run", help="launch a recipe with accelerate: run RECIPE [accelerate args] -- [recipe args]"
    )
    run.add_argument("recipe")
    args, accelerate_args = parser.parse_known_args(args_list)
    if accelerate_args and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(accelerate_args)}")
    try:
        if args.command == "ls":
            for name, path in list_recipes().items():
                presets = ", ".join(_presets(name)) or "-"
                print(f"{name}\n    {_first_line(path)}\n    presets: {presets}")
            return 0
        recipe = _recipe(args.recipe)
        if args.command == "cp":
            target = args.folder / recipe.name
            if target.exists() and not args.force:
                raise FileExistsError(f"{target} exists (--force replaces it)")
            args.folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(recipe, target)
            print(f"copied {recipe.name} to {target}; run it with accelerate launch {target}")
            return 0
        return subprocess.call(launch_command(recipe, accelerate_args, recipe_args))
    except (KeyError, FileExistsError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        print(f"clapkit-train {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
