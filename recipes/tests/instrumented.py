"""Run a recipe with test instruments attached from outside (tests only; production code has
no test hooks):

    python recipes/tests/instrumented.py [--hold-marker SECONDS] [--record-keys DIR] \
        RECIPE.py [recipe arguments...]
    accelerate launch ... recipes/tests/instrumented.py --record-keys DIR RECIPE.py ...

``--hold-marker``: every checkpoint save waits SECONDS between writing its files and its
completion marker (so that a test can kill the process in the middle of a save).
``--record-keys``: each process appends the keys of the clips of every training batch to
``DIR/keys.rank<R>.tsv`` (``epoch<TAB>key`` lines), to count what each epoch saw.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path
from typing import Any


def hold_marker(seconds: float) -> None:
    """Delay every checkpoint's completion marker by ``seconds``."""
    import clapkit.train.checkpointing as checkpointing

    write = checkpointing.write_marker

    def held(folder: Path) -> None:
        time.sleep(seconds)
        write(folder)

    checkpointing.write_marker = held


def record_keys(folder: Path) -> None:
    """Append each training batch's clip keys, per epoch and process, to files in ``folder``."""
    from clapkit.train.recipe import TrainingRecipe

    batches = TrainingRecipe.epoch_batches

    def recorded(self: Any, dataset: Any, loader: Any, **kwargs: Any) -> Any:
        path = folder / f"keys.rank{self.accelerator.process_index}.tsv"
        for batch in batches(self, dataset, loader, **kwargs):
            with path.open("a") as handle:
                handle.writelines(f"{self.progress.epoch}\t{key}\n" for key in batch["keys"])
            yield batch

    TrainingRecipe.epoch_batches = recorded  # type: ignore[method-assign]


def main() -> None:
    """Attach the instruments asked for, then run the recipe as ``__main__``."""
    split = next(i for i, a in enumerate(sys.argv) if i and a.endswith(".py"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold-marker", type=float)
    parser.add_argument("--record-keys", type=Path)
    args = parser.parse_args(sys.argv[1:split])  # the instruments; the recipe's own follow
    if args.hold_marker:
        hold_marker(args.hold_marker)
    if args.record_keys:
        record_keys(args.record_keys)
    recipe = Path(sys.argv[split])
    sys.argv = sys.argv[split:]
    sys.path.insert(0, str(recipe.parent))
    runpy.run_path(str(recipe), run_name="__main__")


if __name__ == "__main__":
    main()
