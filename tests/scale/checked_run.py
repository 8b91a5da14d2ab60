"""A training recipe run as the user launches it, with two checks a test reads afterwards.

``accelerate launch tests/scale/checked_run.py RECIPE REPORT_DIR [recipe arguments]`` runs
``recipes/RECIPE`` (its ``TrainingRecipe`` subclass, through its own ``main``) with its
``optimizer_step`` wrapped: before the first update, every process writes down the trainable
parameters that hold no gradient; at the end, every process writes a digest of its model's
parameters (``REPORT_DIR/rank<R>.json``). The recipe itself carries no test hook: the checks
live in a subclass made here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def recipe_class(file: str) -> Any:
    """The ``TrainingRecipe`` subclass that ``recipes/<file>`` defines."""
    from clapkit.train.recipe import TrainingRecipe

    path = ROOT / "recipes" / file
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, TrainingRecipe)
        and value is not TrainingRecipe
        and value.__module__ == module.__name__
    ]
    assert len(found) == 1, f"{file}: expected one TrainingRecipe subclass, found {found}"
    return found[0]


def model_digest(model: Any) -> str:
    """sha256 over every parameter of the model, in name order.

    Buffers are left out: DDP hands rank 0's buffers (BatchNorm running statistics) to the others
    before each forward, so after the last forward each rank holds its own batch's update.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=_bytes()).numpy())
    return digest.hexdigest()


def _bytes() -> Any:
    import torch

    return torch.uint8


def checked(base: Any, report: Path) -> Any:
    """``base`` with the two checks."""

    class Checked(base):  # type: ignore[misc, valid-type]
        name, script = base.name, base.script  # not this file's
        first_update_seen = False

        def optimizer_step(self) -> None:
            if not self.first_update_seen:
                self.first_update_seen = True
                model = self.accelerator.unwrap_model(self.model)
                missing = [
                    name
                    for name, parameter in model.named_parameters()
                    if parameter.requires_grad and parameter.grad is None
                ]
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                total = sum(p.numel() for p in model.parameters())
                self._write(
                    first_update={
                        "no_gradient": missing,
                        "trainable": trainable,
                        "parameters": total,
                    }
                )
            super().optimizer_step()

        def cleanup(self) -> None:
            model = self.accelerator.unwrap_model(self.model)
            self._write(weights=model_digest(model), step=self.progress.step)
            super().cleanup()

        def _write(self, **entries: Any) -> None:
            path = report / f"rank{self.accelerator.process_index}.json"
            known = json.loads(path.read_text()) if path.is_file() else {}
            path.write_text(json.dumps({**known, **entries}))

    Checked.__name__ = base.__name__
    Checked.__module__ = base.__module__
    return Checked


if __name__ == "__main__":
    recipe, report_dir, *arguments = sys.argv[1:]
    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    checked(recipe_class(recipe), report).main(arguments)
