"""Work split over processes and gathered in order (``clapkit.train.shares``): bad files left
out by name, results in the items' order on uneven shares, an error on one process raised on
every process (2 gloo processes under torchrun, a real ``accelerate.Accelerator``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = """
import json, sys
import torch
from pathlib import Path
from accelerate import Accelerator
from clapkit.audio import AudioLoadError
from clapkit.train.shares import ShareError, map_files, map_shares

accelerator = Accelerator(cpu=True)
rank, out = accelerator.process_index, {}

def compute(items):
    for item in items:
        if item.startswith("bad"):
            raise AudioLoadError(item, "not an audio file")
    return [(item, rank) for item in items]

# 7 items: rank 0 takes 4, rank 1 takes 3
parts = map_shares(accelerator, [f"f{i}" for i in range(7)], compute)
out["shares"] = [x for part in parts for x in part]
found = map_files(accelerator, ["a", "b", "c", "d", "bad", "e", "f"], compute,
                  on_error="skip", chunk=2)
out["files"] = [[x for part in found.parts for x in part], found.kept, found.skipped]
out["empty"] = map_shares(accelerator, ["only"], lambda share: share)
try:
    map_files(accelerator, ["a", "b", "c", "d", "bad", "e"], compute)
except ShareError as error:
    out["raised"] = ["ShareError", str(error)]
except AudioLoadError as error:
    out["raised"] = ["AudioLoadError", str(error)]
Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(out))
accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_processes_share_the_work_and_gather_it_in_order(tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), str(worker), str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for out in ranks:
        # every process gets every share, in the items' order, each computed by its process
        assert out["shares"] == [[f"f{i}", 0 if i < 4 else 1] for i in range(7)]
        good, kept, skipped = out["files"]
        assert [name for name, _ in good] == ["a", "b", "c", "d", "e", "f"]
        assert [who for _, who in good] == [0, 0, 0, 0, 1, 1]
        assert kept == [0, 1, 2, 3, 5, 6]  # indices into the whole list, the bad file left out
        assert skipped == {"bad": "not an audio file"}
        assert out["empty"] == [["only"]]  # rank 1's share is empty: it contributes nothing
    # the bad file is rank 1's (items 3..5): its own error there, named on rank 0 too
    assert ranks[1]["raised"] == ["AudioLoadError", "bad: not an audio file"]
    assert ranks[0]["raised"] == [
        "ShareError",
        "another process failed: AudioLoadError: bad: not an audio file",
    ]


def test_one_process_computes_everything() -> None:
    from accelerate import Accelerator  # type: ignore[import-untyped]

    from clapkit.train.shares import map_shares

    accelerator = Accelerator(cpu=True)
    assert map_shares(accelerator, range(5), lambda share: [i * 2 for i in share]) == [
        [0, 2, 4, 6, 8]
    ]
    assert map_shares(accelerator, [], lambda share: share) == []
    with pytest.raises(ZeroDivisionError):
        map_shares(accelerator, [1], lambda share: share[0] / 0)


def test_skip_bad_files_reruns_a_chunk_without_the_bad_file() -> None:
    from clapkit.audio import AudioLoadError
    from clapkit.train.shares import skip_bad_files

    calls: list[list[str]] = []

    def compute(items: list[str]) -> list[str]:
        calls.append(items)
        for item in items:
            if item.startswith("bad"):
                raise AudioLoadError(item, "not an audio file")
        return [item.upper() for item in items]

    paths = ["a", "bad1", "b", "c", "bad2", "d", "e"]
    seen: list[int] = []
    found = skip_bad_files(compute, paths, on_error="skip", chunk=3, done=seen.append)
    assert [x for part in found.parts for x in part] == ["A", "B", "C", "D", "E"]
    assert found.kept == [0, 2, 3, 5, 6]
    assert found.skipped == {"bad1": "not an audio file", "bad2": "not an audio file"}
    assert seen == [3, 3, 1]  # every file counted once, bad ones included
    assert calls[:2] == [["a", "bad1", "b"], ["a", "b"]]
    with pytest.raises(AudioLoadError, match="bad1: not an audio file"):
        skip_bad_files(compute, paths, chunk=3)
    # an error that names no file of the chunk is not swallowed
    with pytest.raises(AudioLoadError, match="elsewhere"):
        skip_bad_files(
            lambda items: (_ for _ in ()).throw(AudioLoadError("elsewhere", "x")),
            ["a"],
            on_error="skip",
        )
    with pytest.raises(ValueError, match="on_error must be"):
        skip_bad_files(compute, paths, on_error="ignore")  # type: ignore[arg-type]
