"""The ``--device`` check of the ``clapkit`` command: a device that is not there, named."""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "check_device"]


class DeviceError(ValueError):
    """A ``--device`` that torch does not know or this machine does not have."""


def check_device(name: str) -> torch.device:
    """The torch device named by ``--device``, checked before anything loads.

    Args:
        name: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ...

    Returns:
        The device.

    Raises:
        DeviceError: an unknown device name, or one this machine does not have (what it has
            is said).
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(
            f"--device {name!r} is not a device name torch knows (cpu, cuda, cuda:N, mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), 0..")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {name}: MPS (Apple GPU) is not available here")
    return device
