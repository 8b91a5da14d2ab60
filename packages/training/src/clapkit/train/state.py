"""A run's training state as JSON and safetensors: written and read back without unpickling.

What ``accelerator.save_state`` would write (model, optimizer, schedulers, registered objects,
gradient scaler, accelerate's micro-step counter, every process's random generators), but in
formats that cannot run code when read: tensors in safetensors, everything else in JSON.
accelerate's own ``load_state`` unpickles the registered objects (``weights_only=False``) and
swallows a failed random-state restore; neither happens here.

Files of a checkpoint folder (``i`` numbers the objects as accelerate does)::

    training_state.json                     format, accelerate's step, what each object is
    model.safetensors, model_1.safetensors  the models' weights (whole, gathered under FSDP)
    optimizer.json + optimizer.safetensors  each optimizer's state (scheduler_i, scaler alike)
    object_i.json (+ object_i.safetensors)  each object given to register_for_checkpointing
    rng_r.safetensors                       process r's random generators (torch, CUDA,
                                            numpy, Python)

The objects' states go through a small tagged JSON codec (:func:`encode`): tensors move to the
safetensors file beside it, tuples and non-string keys are tagged so that they come back as
they were.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

__all__ = ["RandomStateError", "decode", "encode", "load_training_state", "save_training_state"]

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
FORMAT = 1


class RandomStateError(RuntimeError):
    """A process's random generators could not be restored: the resume would not be exact."""


# -- the codec -------------------------------------------------------------------------------
def encode(value: Any, tensors: dict[str, Any], where: str = "state") -> Any:
    """``value`` as JSON-ready data; its tensors go into ``tensors`` (name -> tensor).

    Args:
        value: None, bool, int, float, str, list, tuple, dict (any JSON-ready keys) and
            ``torch.Tensor``, nested.
        tensors: receives the tensors, named by their path in ``value``.
        where: the path of ``value`` (error messages, tensor names).

    Returns:
        Data for ``json.dumps``; :func:`decode` turns it back into ``value``.

    Raises:
        TypeError: something else (named by its path): it would need pickle.
    """
    import torch

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        tensors[where] = value.detach().cpu().contiguous()
        return {"__tensor__": where}
    if isinstance(value, (list, tuple)):
        items = [encode(v, tensors, f"{where}.{i}") for i, v in enumerate(value)]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        items = [[encode(k, tensors, f"{where}.key{i}"), encode(v, tensors, f"{where}.{k}")]
                 for i, (k, v) in enumerate(value.items())]  # fmt: skip
        return {"__items__": items}
    raise TypeError(
        f"{where} is a {type(value).__name__}: clapkit writes training state as JSON and "
        "safetensors only (no pickle); give the object a state_dict of plain values and tensors"
    )


def decode(data: Any, tensors: dict[str, Any]) -> Any:
    """The value that :func:`encode` turned into ``data``.

    Args:
        data: parsed JSON.
        tensors: the tensors saved beside it.

    Returns:
        The value (tuples, non-string keys and tensors restored).

    Raises:
        KeyError: a tensor named in ``data`` is missing.
    """
    if isinstance(data, list):
        return [decode(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        return tensors[data["__tensor__"]]
    if "__tuple__" in data:
        return tuple(decode(v, tensors) for v in data["__tuple__"])
    if "__items__" in data:
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in data["__items__"]}
    return {k: decode(v, tensors) for k, v in data.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _write_value(folder: Path, stem: str, value: Any) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    data = encode(value, tensors, stem)
    (folder / f"{stem}.json").write_text(json.dumps(data))
    if tensors:
        save_file(tensors, str(folder / f"{stem}.safetensors"))


def _read_value(folder: Path, stem: str) -> Any:
    from safetensors.torch import load_file

    tensors_file = folder / f"{stem}.safetensors"
    tensors = load_file(str(tensors_file)) if tensors_file.is_file() else {}
    return decode(json.loads((folder / f"{stem}.json").read_text()), tensors)


def _indexed(stem: str, i: int) -> str:
    return stem if i == 0 else f"{stem}_{i}"


# -- models and optimizers (whole under FSDP) -----------------------------------------------
def _sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    return isinstance(model, FullyShardedDataParallel) or any(
        isinstance(p, DTensor) for p in model.parameters()
    )


def _whole() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _save_model(accelerator: Any, model: Any, folder: Path, stem: str) -> None:
    from safetensors.torch import save_file, save_model

    if not _sharded(model):
        if accelerator.is_main_process:
            save_model(accelerator.unwrap_model(model), str(folder / f"{stem}.safetensors"))
        return
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state: dict[str, Any] = get_model_state_dict(model, options=_whole())  # every process
    if accelerator.is_main_process:  # tied weights: one copy per name (safetensors shares none)
        seen: set[int] = set()
        whole = {}
        for name, tensor in state.items():
            shared = tensor.data_ptr() in seen
            seen.add(tensor.data_ptr())
            whole[name] = tensor.clone() if shared else tensor.contiguous()
        save_file(whole, str(folder / f"{stem}.safetensors"))


def _load_model(accelerator: Any, model: Any, file: Path) -> None:
    from safetensors.torch import load_file, load_model

    if not _sharded(model):
        load_model(accelerator.unwrap_model(model), str(file), strict=True, device="cpu")
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    whole: dict[str, Any] = load_file(str(file))
    set_model_state_dict(model, whole, options=StateDictOptions(full_state_dict=True))


def _save_optimizer(accelerator: Any, model: Any, optimizer: Any, folder: Path, stem: str) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    if model is not None and _sharded(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = get_optimizer_state_dict(model, inner, options=_whole())  # a collective
    else:
        state = inner.state_dict()
    if accelerator.is_main_process:
        _write_value(folder, stem, state)


def _load_optimizer(model: Any, optimizer: Any, folder: Path, stem: str) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)
    state = _read_value(folder, stem)
    if model is not None and _sharded(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            model, inner, state, options=StateDictOptions(full_state_dict=True)
        )
    else:
        inner.load_state_dict(state)


# -- random generators -------------------------------------------------------------------------
def _save_rng(folder: Path, rank: int) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(internal, dtype=torch.int64),
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
    }
    if torch.cuda.is_available():
        for device, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{device}"] = state
    scalars = {"python_version": version, "python_gauss": gauss, "numpy_kind": kind,
               "numpy_position": int(position), "numpy_has_gauss": int(has_gauss),
               "numpy_cached_gaussian": float(cached)}  # fmt: skip
    save_file(
        tensors, str(folder / f"rng_{rank}.safetensors"), metadata={"scalars": json.dumps(scalars)}
    )


def _load_rng(folder: Path, rank: int) -> None:
    import numpy as np
    import torch
    from safetensors import safe_open

    file = folder / f"rng_{rank}.safetensors"
    try:
        with safe_open(str(file), framework="pt") as handle:
            scalars = json.loads(handle.metadata()["scalars"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        torch.set_rng_state(tensors["torch"])
        internal = tuple(int(v) for v in tensors["python"].tolist())
        random.setstate((scalars["python_version"], internal, scalars["python_gauss"]))
        np.random.set_state((scalars["numpy_kind"], tensors["numpy"].numpy().astype(np.uint32),
                             scalars["numpy_position"], scalars["numpy_has_gauss"],
                             scalars["numpy_cached_gaussian"]))  # fmt: skip
        if torch.cuda.is_available():
            saved = sorted(k for k in tensors if k.startswith("cuda."))
            if len(saved) != torch.cuda.device_count():
                raise ValueError(f"{len(saved)} CUDA generators saved, "
                                 f"{torch.cuda.device_count()} devices now")  # fmt: skip
            torch.cuda.set_rng_state_all([tensors[k] for k in saved])
    except Exception as error:  # missing, unreadable or of another shape: all mean "not exact"
        raise RandomStateError(
            f"process {rank}'s random generators could not be restored from {file}: {error}"
        ) from error


# -- the whole state ---------------------------------------------------------------------------
def save_training_state(accelerator: Any, folder: Path) -> None:
    """Write what the accelerator tracks into ``folder`` (call on every process).

    Models, optimizers and schedulers prepared by the accelerator, the objects given to
    ``register_for_checkpointing``, the gradient scaler and accelerate's micro-step counter are
    written by the main process; every process writes its random generators. Under FSDP the
    models and optimizers are gathered whole (collectives) first.

    Args:
        accelerator: the run's accelerator.
        folder: an existing, empty staging folder (shared by the processes).

    Raises:
        TypeError: a registered object's state holds something other than plain values and
            tensors.
    """
    models, optimizers = accelerator._models, accelerator._optimizers  # what save_state saves
    for i, model in enumerate(models):
        _save_model(accelerator, model, folder, _indexed("model", i))
    for i, optimizer in enumerate(optimizers):
        model = models[i] if i < len(models) else None
        _save_optimizer(accelerator, model, optimizer, folder, _indexed("optimizer", i))
    _save_rng(folder, accelerator.process_index)
    if not accelerator.is_main_process:
        return
    for i, scheduler in enumerate(accelerator._schedulers):
        _write_value(folder, _indexed("scheduler", i), scheduler.state_dict())
    objects = accelerator._custom_objects
    for i, obj in enumerate(objects):
        _write_value(folder, f"object_{i}", obj.state_dict())
    if accelerator.scaler is not None:
        _write_value(folder, "scaler", accelerator.scaler.state_dict())
    summary = {
        "format": FORMAT, "step": accelerator.step, "processes": accelerator.num_processes,
        "models": len(models), "optimizers": len(optimizers),
        "schedulers": len(accelerator._schedulers),
        "objects": [type(obj).__name__ for obj in objects],
        "scaler": accelerator.scaler is not None,
    }  # fmt: skip
    (folder / STATE_FILE).write_text(json.dumps(summary, indent=1))


def load_training_state(accelerator: Any, folder: Path, *, force: bool = False) -> None:
    """Restore what :func:`save_training_state` wrote (call on every process).

    Args:
        accelerator: the run's accelerator, with the same models, optimizers, schedulers and
            registered objects as the run that saved.
        folder: a verified checkpoint folder.
        force: a failed restore of the random generators only warns (``--resume-force``).

    Raises:
        ValueError: the checkpoint holds other objects than this run tracks (named).
        RandomStateError: this process's random generators could not be restored (without
            ``force``).
    """
    summary = json.loads((folder / STATE_FILE).read_text())
    now = {"models": len(accelerator._models), "optimizers": len(accelerator._optimizers),
           "schedulers": len(accelerator._schedulers),
           "objects": [type(obj).__name__ for obj in accelerator._custom_objects],
           "scaler": accelerator.scaler is not None}  # fmt: skip
    differ = {k: (summary.get(k), v) for k, v in now.items() if summary.get(k) != v}
    if differ:
        listing = ", ".join(f"{k}: {old} saved, {new} now" for k, (old, new) in differ.items())
        raise ValueError(f"checkpoint {folder} holds other training state than this run: {listing}")
    for i, model in enumerate(accelerator._models):
        _load_model(accelerator, model, folder / f"{_indexed('model', i)}.safetensors")
    for i, optimizer in enumerate(accelerator._optimizers):
        model = accelerator._models[i] if i < len(accelerator._models) else None
        _load_optimizer(model, optimizer, folder, _indexed("optimizer", i))
    for i, scheduler in enumerate(accelerator._schedulers):
        scheduler.load_state_dict(_read_value(folder, _indexed("scheduler", i)))
    for i, obj in enumerate(accelerator._custom_objects):
        obj.load_state_dict(_read_value(folder, f"object_{i}"))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(_read_value(folder, "scaler"))
    accelerator.step = summary["step"]
    try:
        _load_rng(folder, accelerator.process_index)
    except RandomStateError as error:
        if not force:
            raise RandomStateError(
                f"{error}; the resume would not repeat the unbroken run's random numbers. "
                "Add --resume-force to go on anyway"
            ) from error
        logger.warning("--resume-force: %s; the random numbers now differ from an unbroken run",
                       error)  # fmt: skip
