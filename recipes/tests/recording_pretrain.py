"""``pretrain_clap.py`` that also writes down the clips each process trained on (a test's view).

Launched like the recipe: ``accelerate launch recipes/tests/recording_pretrain.py KEYS_DIR
[recipe arguments]``; each process appends ``epoch<TAB>key`` lines to
``KEYS_DIR/keys.rank<R>.tsv``. The recording is a subclass, so the recipe itself carries no test
hook.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pretrain_clap import PretrainClapRecipe


class RecordingRecipe(PretrainClapRecipe):
    """The recipe, recording the keys of every micro-batch it trains on."""

    keys_dir = Path(".")

    def model_inputs(self, batch: dict[str, Any]) -> Any:
        rank = self.accelerator.process_index
        with (self.keys_dir / f"keys.rank{rank}.tsv").open("a") as handle:
            handle.writelines(f"{self.progress.epoch}\t{key}\n" for key in batch["keys"])
        return super().model_inputs(batch)


if __name__ == "__main__":
    RecordingRecipe.keys_dir = Path(sys.argv[1])
    RecordingRecipe.main(sys.argv[2:])
