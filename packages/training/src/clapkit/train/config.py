"""Recipe configs: named presets with typed command-line overrides, hashes and diffs.

A recipe's settings are one frozen dataclass whose defaults are the paper's. A preset is an
instance of it; the command line picks one with ``--preset NAME`` and overrides any field
(``--epochs 3 --seed 1``, parsed and type-checked by tyro)::

    preset, cfg = parse_config(Config, PRESETS, sys.argv[1:], default="table1-htsat22-gpt2",
                               description=__doc__)

:func:`config_hash` and :func:`config_diff` are what a run folder records and what a resume
compares (see :mod:`clapkit.train.runs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, TypeVar

__all__ = [
    "RUN_RESUMABLE_CHANGES",
    "RunSettings",
    "config_diff",
    "config_hash",
    "jsonable",
    "parse_config",
    "preset_docs",
]

C = TypeVar("C")

RUN_RESUMABLE_CHANGES = (
    "output_dir",
    "resume",
    "resume_force",
    "overwrite",
    "log_with",
    "log_every",
    "push_to_hub",
    "hub_private",
    "torch_threads",
    "save_every_steps",
    "requeue_exit_code",
)
"""`RunSettings` fields a resumed run may change: where it writes, how it resumes, logs and
checkpoints."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The settings every training run has: precision, seed, run folder, checkpoints, resume,
    logging, threads. Each recipe's ``Config`` extends it (and may change a default by
    declaring the field again)."""

    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto: the launcher's (``accelerate launch --mixed_precision`` or its config file), else
    bf16 on a GPU that has it and no (float32) elsewhere (``clapkit.train.setup.
    resolve_precision``); a value here overrides the launcher."""
    tf32: bool = True
    """TensorFloat-32 for float32 matrix products and convolutions on CUDA (the paper's runs:
    ~8x an H100's plain float32 rate; the front end's STFT is unaffected)."""
    push_to_hub: str | None = None
    """A hub repository (``org/name``): at the end, ``best/`` is uploaded with a model card
    (licence, pipeline tag, the run's card as its body) in one commit."""
    hub_private: bool = False
    """Create the --push-to-hub repository private."""
    log_every: int = 50
    """Read the losses back from the device, check them and log every N optimizer updates (and
    at every checkpoint and epoch end); in between nothing waits for the device."""
    seed: int = 0
    global_batch_size: int = 64
    """Samples per optimizer update over all processes: each process accumulates
    ``global_batch_size / (batch_size x processes)`` micro-batches."""
    batch_size: int = 64
    """Samples per micro-batch on each process."""
    max_grad_norm: float | None = None
    """Clip the gradients' global norm to this before each update (None: no clipping)."""
    output_dir: str = "runs/run"
    save_every_steps: int = 1000
    """Checkpoint every N optimizer updates (and at every epoch end)."""
    resume: str | None = None
    """'latest' (the newest complete checkpoint in --output-dir) or a checkpoint folder."""
    resume_force: bool = False
    """Resume although the checkpoint's run had another config (the differences are listed)."""
    requeue_exit_code: int = 75
    """Exit status after SIGUSR1 (checkpoint saved; 75 = EX_TEMPFAIL): what a batch script
    checks to requeue the job. SIGTERM exits with 143, SIGINT with 130."""
    overwrite: bool = False
    """Start afresh in a non-empty --output-dir: the old run is moved to OUT.old-<timestamp>
    (then -2, -3... within one second)."""
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    torch_threads: int | None = None
    """torch.set_num_threads for CPU runs (None = torch's default)."""


def preset_docs(presets: Mapping[str, Any], notes: Mapping[str, str] | None = None) -> str:
    """One line per preset, ``NAME: note`` (for ``--help``).

    Args:
        presets: name -> config.
        notes: name -> a line about the preset (what it reproduces, the paper's numbers).

    Returns:
        The lines, joined by newlines.
    """
    notes = notes or {}
    return "\n".join(f"  {name}: {notes.get(name, '')}".rstrip(": ") for name in sorted(presets))


def parse_config(
    config_class: type[C],
    presets: Mapping[str, C],
    argv: Sequence[str],
    *,
    default: str,
    description: str | None = None,
    notes: Mapping[str, str] | None = None,
) -> tuple[str, C]:
    """``--preset NAME`` picks the starting values; every other flag overrides a field.

    Args:
        config_class: the recipe's frozen dataclass.
        presets: name -> instance of ``config_class``.
        argv: the command line without the program name.
        default: the preset used when ``--preset`` is not given.
        description: the ``--help`` text (the recipe's docstring); the preset list is appended.
        notes: preset name -> one line shown in that list.

    Returns:
        ``(preset name, resolved config)``.

    Raises:
        SystemExit: an unknown preset or a bad override (argparse/tyro print why).
    """
    import tyro

    if default not in presets:
        raise ValueError(f"default preset {default!r} is not one of {sorted(presets)}")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preset", choices=sorted(presets), default=default)
    known, rest = parser.parse_known_args(list(argv))
    text = f"{description or ''}\nPresets (--preset NAME):\n{preset_docs(presets, notes)}"
    cfg = tyro.cli(config_class, default=presets[known.preset], args=rest, description=text)
    return known.preset, cfg


def jsonable(value: Any) -> Any:
    """A dataclass, mapping or sequence as plain JSON values (tuples -> lists, others -> str).

    Args:
        value: what to convert.

    Returns:
        The JSON-ready value.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def config_hash(config: Any, ignore: Collection[str] = ()) -> str:
    """A short stable digest of a config, leaving out the fields in ``ignore``.

    Args:
        config: a dataclass or a mapping.
        ignore: top-level fields that do not change what is trained (output folder, logging,
            resume flags, stopping points).

    Returns:
        16 hex digits of the SHA-256 of the canonical JSON.
    """
    values = {k: v for k, v in jsonable(config).items() if k not in ignore}
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Collection[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """The top-level fields whose values differ between two configs.

    Args:
        old: e.g. the config recorded in a checkpoint's ``run.json``.
        new: e.g. this launch's resolved config.
        ignore: fields not compared.

    Returns:
        name -> ``(old value, new value)``, sorted by name; a field missing on one side shows
        as ``"<missing>"`` there.
    """
    a, b = jsonable(old), jsonable(new)
    missing = "<missing>"
    names = sorted((set(a) | set(b)) - set(ignore))
    return {
        n: (a.get(n, missing), b.get(n, missing))
        for n in names
        if a.get(n, missing) != b.get(n, missing)
    }
