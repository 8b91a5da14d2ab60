"""The one strict-loading error of clapkit (every package raises and catches this type)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file or state dict does not fit the model it is loaded into.

    The message names the file (or ``"state dict"``) and the keys or fields at fault: missing,
    unexpected and misshapen keys by name, a wrong architecture or front end, an unsafe pickle.
    """
