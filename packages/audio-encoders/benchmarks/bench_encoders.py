"""Clips per second of clapkit's CNN14 and HTSAT against the reference code, same weights.

Run from the repository root in an environment that has the workspace and the reference
implementations (``panns-inference``, ``msclap``, ``torchlibrosa``): ``nox -s bench``, or a venv
you make with ``tools/parity-references.txt`` (``--no-deps``) and ``tools/parity-deps.txt``:

    HF_HUB_OFFLINE=1 python packages/audio-encoders/benchmarks/bench_encoders.py \\
        --batch 8 --seconds 10 --rounds 3 --json bench-audio.json

References: PANNs ``panns_inference.models.Cnn14`` and HTS-AT ``msclap.models.htsat``
(``HTSAT_Swin_Transformer``, the HTS-AT code msclap ships). Both sides run the same weights
(seeded reference initialisation, loaded into clapkit) under ``torch.inference_mode``. clapkit
runs as its users get it, through :func:`clapkit.audio.inference_form` (``--plain`` also times
the plain encoder; under bf16 autocast the form runs the plain encoder).

Every contender (reference or clapkit, fp32 or bf16) runs in a fresh process of its own: the
allocator's state (glibc's mmap threshold moves with what the process has freed) otherwise
carries from one contender to the next and shifts the figures by 20% or more. Rounds alternate
the order of the contenders so that load from other processes hits all alike; each process
warms up once, then times ``--repeats`` forward passes. The table gives the best and median
pass of each and ratios against the reference at the same precision. ``--bf16`` adds both under
``torch.autocast(bfloat16)`` (not numerically identical to float32). On CUDA both always run
with and without bf16 autocast. ``--json PATH`` also writes the median figures as
``{"rows": [{"benchmark", "case", "unit", "reference", "clapkit"}]}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clapkit.audio import AudioEncoder, cnn14, htsat, inference_form, load_reference_state_dict


def reference_cnn14() -> nn.Module:
    """PANNs CNN14 at 32 kHz (panns_inference)."""
    from panns_inference.models import Cnn14

    return Cnn14(
        sample_rate=32000,
        window_size=1024,
        hop_size=320,
        mel_bins=64,
        fmin=50,
        fmax=14000,
        classes_num=527,
    )


def reference_htsat() -> nn.Module:
    """HTS-AT tiny, AudioSet settings (msclap's copy of the HTS-AT code)."""
    from msclap.models import config
    from msclap.models.htsat import HTSAT_Swin_Transformer

    return HTSAT_Swin_Transformer(config=config)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], AudioEncoder]]] = {
    "cnn14": (reference_cnn14, cnn14),
    "htsat": (reference_htsat, htsat),
}


def worker(args: argparse.Namespace) -> None:
    """Build one contender, warm it up, time ``args.repeats`` passes, print them as JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    build_reference, build_ours = MODELS[args.models[0]]
    torch.manual_seed(0)
    reference = build_reference().eval()
    side, precision = args.worker.split()
    device = torch.device(args.device)
    model: nn.Module = reference
    if side.startswith("clapkit"):
        ours = build_ours().eval()
        load_reference_state_dict(ours, reference.state_dict())
        del reference
        ours.to(device)
        model = ours if side == "clapkit-plain" else inference_form(ours)
    model.to(device)
    generator = torch.Generator().manual_seed(1)
    wave = 0.1 * torch.randn(args.batch, round(32000 * args.seconds), generator=generator)
    wave = wave.to(device)
    low = precision == "bf16"
    times = []
    for _ in range(args.repeats + 1):  # the first pass warms up allocator and kernel caches
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=low),
        ):
            model(wave)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(json.dumps(times[1:]))


def bench(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time one architecture, one process per contender and round; print clips/s and ratios.

    Args:
        name: ``"cnn14"`` or ``"htsat"``.
        args: The parsed command line.

    Returns:
        One row per clapkit contender: median clips/s of the reference and of clapkit.
    """
    labels = ["reference fp32", "clapkit fp32"]
    if args.plain:
        labels.append("clapkit-plain fp32")
    if args.bf16 or args.device.startswith("cuda"):
        labels += ["reference bf16", "clapkit bf16"]
    times: dict[str, list[float]] = {label: [] for label in labels}
    command = [sys.executable, __file__, "--models", name, "--batch", str(args.batch)]
    command += ["--seconds", str(args.seconds), "--repeats", str(args.repeats)]
    command += ["--threads", str(args.threads), "--device", args.device]
    for round_index in range(args.rounds):
        for label in labels if round_index % 2 == 0 else labels[::-1]:
            result = subprocess.run(
                [*command, "--worker", label], capture_output=True, text=True, check=True
            )
            times[label] += json.loads(result.stdout.strip().splitlines()[-1])
    threads = args.threads or torch.get_num_threads()
    print(
        f"\n{name}: batch {args.batch} x {args.seconds:g} s at 32 kHz on {args.device}, "
        f"{threads} threads, {args.rounds} rounds x {args.repeats} passes, one process each; "
        "x ref = against the reference at the same precision"
    )
    header = ("", "best clips/s", "median clips/s", "x ref (median)", "x ref (best)")
    print(f"{header[0]:18s} {header[1]:>13s} {header[2]:>15s} {header[3]:>15s} {header[4]:>13s}")
    rows = []
    for label, values in times.items():
        side, precision = label.split()
        same = times["reference " + precision]
        median = statistics.median(values)
        print(
            f"{label:18s} {args.batch / min(values):13.2f} {args.batch / median:15.2f} "
            f"{statistics.median(same) / median:15.2f} {min(same) / min(values):13.2f}"
        )
        if side != "reference":
            form = " (plain encoder)" if side == "clapkit-plain" else ""
            case = f"{name}{form} {precision}, batch {args.batch} x {args.seconds:g} s, median"
            rows.append(
                {
                    "benchmark": "audio-encoders",
                    "case": f"{case}, {args.device}",
                    "unit": "clips/s",
                    "reference": args.batch / statistics.median(same),
                    "clapkit": args.batch / median,
                }
            )
    return rows


def main() -> None:
    """Parse arguments and run the benchmarks (or, with ``--worker``, one contender)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="processes per contender")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per process")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="also time both under bf16")
    parser.add_argument("--plain", action="store_true", help="also time the plain encoder")
    parser.add_argument("--json", type=Path, help="also write the median figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = [row for name in args.models for row in bench(name, args)]
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
