"""Clips per second of clapkit's CNN14 and HTSAT against the reference code, same weights, same run.

Run in an environment that has the reference implementations (``panns-inference``, ``msclap``,
``torchlibrosa``), e.g. the parity environment:

    HF_HUB_OFFLINE=1 /work/parityenv/bin/python \
        packages/audio-encoders/benchmarks/bench_encoders.py --batch 8 --seconds 10 --rounds 5

References: PANNs ``panns_inference.models.Cnn14`` and HTS-AT ``msclap.models.htsat``
(``HTSAT_Swin_Transformer``, the HTS-AT code msclap ships). Both sides run the same weights under
``torch.inference_mode``. Rounds are interleaved (reference, clapkit, alternating order) so that
load from other processes hits both alike; the figures are the best round of each and the ratio
of the per-round medians. ``--bf16`` adds clapkit under ``torch.autocast(bfloat16)`` (not
numerically identical to float32). On CUDA both run with and without bf16 autocast.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from clapkit.audio import AudioEncoder, cnn14, htsat, load_reference_state_dict


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


def _timer(model: nn.Module, wave: Tensor, autocast: torch.dtype | None) -> Callable[[], float]:
    device = wave.device

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with (
            torch.inference_mode(),
            torch.autocast(
                device.type, dtype=autocast or torch.float32, enabled=autocast is not None
            ),
        ):
            model(wave)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def bench(name: str, args: argparse.Namespace) -> None:
    """Time one architecture and print clips/s and speed-ups."""
    build_reference, build_ours = MODELS[name]
    torch.manual_seed(0)
    reference = build_reference().eval()
    ours = build_ours().eval()
    load_reference_state_dict(ours, reference.state_dict())
    device = torch.device(args.device)
    reference.to(device)
    ours.to(device)
    wave = 0.1 * torch.randn(args.batch, round(32000 * args.seconds), device=device)
    runners: dict[str, Callable[[], float]] = {
        "reference fp32": _timer(reference, wave, None),
        "clapkit fp32": _timer(ours, wave, None),
    }
    low = torch.bfloat16
    if args.bf16 or device.type == "cuda":
        if device.type == "cuda":
            runners["reference bf16"] = _timer(reference, wave, low)
        runners["clapkit bf16"] = _timer(ours, wave, low)
    for run in runners.values():
        run()  # warm-up: allocator, oneDNN primitive caches, cuDNN autotuning
    times: dict[str, list[float]] = {label: [] for label in runners}
    for round_index in range(args.rounds):
        labels = list(runners)
        if round_index % 2:
            labels.reverse()
        for label in labels:
            times[label].append(runners[label]())
    base = statistics.median(times["reference fp32"])
    best_base = min(times["reference fp32"])
    print(
        f"\n{name}: batch {args.batch} x {args.seconds:g} s at 32 kHz on {device}, "
        f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds"
    )
    print(
        f"{'':16s} {'best clips/s':>13s} {'median clips/s':>15s} {'x ref (median)':>15s} "
        f"{'x ref (best)':>13s}"
    )
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"{label:16s} {args.batch / min(values):13.2f} {args.batch / median:15.2f} "
            f"{base / median:15.2f} {best_base / min(values):13.2f}"
        )


def main() -> None:
    """Parse arguments and run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="also time clapkit under bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models:
        bench(name, args)


if __name__ == "__main__":
    main()
