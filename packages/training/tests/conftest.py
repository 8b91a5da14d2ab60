"""Shared fixtures: a tiny prepared model on a CPU accelerator."""

from __future__ import annotations

from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def prepared() -> tuple[Any, torch.nn.Module, torch.optim.Optimizer]:
    """An ``Accelerator(cpu=True)`` with a small linear model and its Adam, prepared."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer
