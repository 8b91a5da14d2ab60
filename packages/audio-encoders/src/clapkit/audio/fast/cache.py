"""One encoder's fast inference form, rebuilt when the encoder changes."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

from clapkit.audio.fast.cnn14 import WINOGRAD_MIN_CHANNELS
from clapkit.audio.fast.transform import inference_form


def _remove(handles: list[RemovableHandle]) -> None:
    for handle in handles:
        handle.remove()


class InferenceFormCache:
    """Holds :func:`~clapkit.audio.inference_form` of an encoder, current with its weights.

    :meth:`get` builds the form on first use and rebuilds it once it is stale. Staleness is
    seen through public torch APIs only:

    - ``load_state_dict`` on the encoder, an ancestor or a submodule (a post hook on each of its
      modules; :func:`clapkit.audio.load_weights` goes through it too);
    - a step of any ``torch.optim`` optimiser holding one of the encoder's parameters (a global
      optimiser step post hook);
    - a forward pass in training mode (BatchNorm running statistics move there);
    - a change of the training flag, or of the device, dtype, shape or identity of any parameter
      or buffer (compared on every :meth:`get`): ``train()``/``eval()``, ``.to()``, a replaced
      ``nn.Parameter``.

    Not seen: in-place edits without an optimiser, e.g. ``weight.mul_(2)`` or ``copy_`` under
    ``torch.no_grad()``, or assigning ``param.data``. Call :meth:`invalidate` after those.

    Args:
        encoder: The encoder (any module; one without a fast form is returned as it is).
        winograd_min_channels: Passed to :func:`~clapkit.audio.inference_form`.

    Attributes:
        encoder: The encoder.
        builds: How many times the form was built (for tests and logs).
    """

    def __init__(
        self, encoder: nn.Module, *, winograd_min_channels: int = WINOGRAD_MIN_CHANNELS
    ) -> None:
        self.encoder = encoder
        self.winograd_min_channels = winograd_min_channels
        self.builds = 0
        self._form: nn.Module | None = None
        self._signature: tuple[Any, ...] | None = None
        self._parameter_ids: set[int] = set()
        # Hooks hold the cache weakly: the encoder must not keep a dropped cache alive.
        this = weakref.ref(self)

        def stale(*_: Any) -> None:
            cache = this()
            if cache is not None:
                cache.invalidate()

        def training_forward(module: nn.Module, _: Any) -> None:
            if module.training:
                stale()

        def optimiser_step(optimizer: torch.optim.Optimizer, *_: Any) -> None:
            cache = this()
            if cache is not None and cache._form is not None and cache._steps(optimizer):
                cache.invalidate()

        handles: list[RemovableHandle] = [
            module.register_load_state_dict_post_hook(stale) for module in encoder.modules()
        ]
        handles.append(encoder.register_forward_pre_hook(training_forward))
        handles.append(register_optimizer_step_post_hook(optimiser_step))
        self._release: Callable[[], Any] = weakref.finalize(self, _remove, handles)

    def _steps(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``optimizer`` updates a parameter of the encoder."""
        return any(
            id(p) in self._parameter_ids
            for group in optimizer.param_groups
            for p in group["params"]
        )

    def _current_signature(self) -> tuple[Any, ...]:
        tensors = [*self.encoder.named_parameters(), *self.encoder.named_buffers()]
        return (
            self.encoder.training,
            tuple((name, id(t), t.device, t.dtype, t.shape) for name, t in tensors),
        )

    def get(self) -> nn.Module:
        """The fast form, built now if there is none or it is stale.

        Returns:
            ``inference_form(encoder)``: the fast form, or the encoder itself where it has none
            (training mode, a GPU, half precision, an unknown encoder).
        """
        signature = self._current_signature()
        if self._form is None or signature != self._signature:
            self._form = None  # free the old copies before building new ones
            self._form = inference_form(
                self.encoder, winograd_min_channels=self.winograd_min_channels
            )
            self._signature = signature
            self._parameter_ids = {id(p) for p in self.encoder.parameters()}
            self.builds += 1
        return self._form

    def invalidate(self) -> None:
        """Drop the form; the next :meth:`get` rebuilds it."""
        self._form = None
        self._signature = None

    def close(self) -> None:
        """Remove the hooks (also done when the cache is garbage-collected)."""
        self._release()
