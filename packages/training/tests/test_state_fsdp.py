"""The training state of an FSDP2-sharded model (``fully_shard`` on 2 CPU processes, gloo):
saved whole, loaded back into a fresh sharded model and optimizer, training goes on exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = """
import json, sys
from dataclasses import dataclass, field
from pathlib import Path
import torch, torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
from torch.distributed.fsdp import fully_shard
from clapkit.train.state import load_training_state, save_training_state

dist.init_process_group("gloo")
rank, folder = dist.get_rank(), Path(sys.argv[1])

@dataclass
class Run:  # what save_training_state reads of an accelerator
    _models: list
    _optimizers: list
    _schedulers: list = field(default_factory=list)
    _custom_objects: list = field(default_factory=list)
    scaler: object = None
    step: int = 0
    process_index: int = rank
    num_processes: int = 2
    is_main_process: bool = rank == 0
    def unwrap_model(self, model):
        return model

def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)

def train(model, optimizer, seed):
    data = torch.randn(8, 6, generator=torch.Generator().manual_seed(seed))
    model(data[4 * rank: 4 * rank + 4]).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()

whole = StateDictOptions(full_state_dict=True, cpu_offload=True)
model, optimizer = build()
for seed in (1, 2):
    train(model, optimizer, seed)
if rank == 0:
    folder.mkdir()
dist.barrier()
save_training_state(Run([model], [optimizer], step=2), folder)
dist.barrier()
train(model, optimizer, 3)
expected = get_model_state_dict(model, options=whole)

fresh, fresh_optimizer = build()
run = Run([fresh], [fresh_optimizer])
load_training_state(run, folder)
train(fresh, fresh_optimizer, 3)
got = get_model_state_dict(fresh, options=whole)
moments = get_optimizer_state_dict(fresh, fresh_optimizer, options=whole)
if rank == 0:
    result = {"step": run.step, "keys": sorted(expected) == sorted(got),
              "difference": max((expected[k] - got[k]).abs().max().item() for k in expected),
              "adam_steps": sorted({float(s["step"]) for s in moments["state"].values()}),
              "files": sorted(p.name for p in folder.iterdir())}
    Path(sys.argv[2]).write_text(json.dumps(result))
dist.barrier()
dist.destroy_process_group()
"""


def test_a_sharded_model_and_its_optimizer_resume_exactly(tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    result = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29623", str(worker), str(tmp_path / "state"), str(result)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(result.read_text())
    assert outcome["step"] == 2
    assert outcome["keys"] is True
    assert outcome["difference"] == 0.0  # the third step from the loaded state = the unbroken one
    assert outcome["adam_steps"] == [3.0]
    # one whole copy of the weights and of the optimizer (main process), a generator file each
    assert outcome["files"] == [
        "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng_0.safetensors",
        "rng_1.safetensors", "training_state.json",
    ]  # fmt: skip
