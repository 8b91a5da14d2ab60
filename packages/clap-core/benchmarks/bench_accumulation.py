"""Peak memory of one contrastive update with full-batch negatives, k = 1, 4, 16 micro-batches.

Run from the repository root::

    python packages/clap-core/benchmarks/bench_accumulation.py --json bench-accumulation.json

Each k runs in a fresh process (so ``getrusage`` max RSS belongs to that update alone): a small
CPU model (CNN14-shaped encoder with channels 32-256 on 8 kHz, 1 s FSDD clips, 32 mels; a
2-layer GPT2-EOT with the real GPT-2 tokenizer; 128-d projections; dropout off and batch norm
frozen, so every k gives the same loss) takes one `accumulated_contrastive_step` over the same
global batch cut into k micro-batches. Reported per
k: the process's peak RSS, the growth of RSS during the update (peak minus RSS just before it,
i.e. activations, gradients and allocator slack) and the update's wall time. ``--json PATH``
writes ``{"rows": [{"benchmark", "case", "unit", "reference", "clapkit"}]}`` with the k = 1 step
as the reference of each k.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[3]
FSDD = ROOT / "data" / "fsdd" / "recordings"
GPT2_FILES = ROOT / "data" / "reference" / "tokenizers" / "gpt2"


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _model() -> Any:
    # transformers 5 exports the tokenizer lazily, where mypy does not see it
    from transformers import GPT2Config, GPT2TokenizerFast  # type: ignore[attr-defined]

    from clapkit.audio import FrontendConfig, cnn14_encoder
    from clapkit.core import build_clap
    from clapkit.text import gpt2_eot

    frontend = FrontendConfig(
        sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=32,
        fmin=0.0, fmax=4000.0, clip_seconds=1.0, fill="repeat",
    )  # fmt: skip
    audio = cnn14_encoder(
        frontend=frontend, channels=(32, 64, 128, 256), out_dim=256, num_classes=0
    )
    tokenizer = GPT2TokenizerFast(
        vocab_file=str(GPT2_FILES / "vocab.json"), merges_file=str(GPT2_FILES / "merges.txt")
    )
    config = GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=64)
    text = gpt2_eot(config=config, tokenizer=tokenizer, max_length=32)
    # eval mode: no dropout and batch norm on running statistics, so every k computes the same
    # loss (the table shows it); autograd, and so the memory of the update, is unchanged
    return build_clap(audio, text, projection_dim=128).eval()


def _batch(model: Any, rows: int) -> dict[str, Any]:
    files = sorted(FSDD.glob("*.flac"))[:rows]
    if len(files) < rows:
        raise SystemExit(f"need {rows} FSDD clips under {FSDD}, found {len(files)}")
    clips = []
    for path in files:
        data, _ = sf.read(str(path), dtype="float32")
        clip = torch.from_numpy(data)[:8000]
        clips.append(torch.nn.functional.pad(clip, (0, 8000 - clip.shape[0])))
    captions = [f"a person says the digit {p.name.split('_')[0]}" for p in files]
    return {"waveform": torch.stack(clips), **model.text_encoder.tokenize(captions)}


def _child(k: int, rows: int) -> dict[str, float]:
    from clapkit.core import ContrastiveLoss, accumulated_contrastive_step, split_micro_batches

    torch.manual_seed(0)
    model = _model()
    micro_batches = split_micro_batches(_batch(model, rows), k)
    before, peak_before = _rss_mib(), _peak_mib()
    start = time.perf_counter()
    loss = accumulated_contrastive_step(model, micro_batches, ContrastiveLoss())
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    if peak <= peak_before:
        raise RuntimeError("the update did not set the process's peak RSS; raise --batch")
    return {"peak": peak, "growth": peak - before, "seconds": seconds, "loss": float(loss)}


def main() -> None:
    """Parse the arguments, run one process per k and print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="global batch (FSDD clips)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(_child(args.child, args.batch)))
        return

    results = {}
    for k in args.ks:
        command = [sys.executable, __file__, "--child", str(k), "--batch", str(args.batch)]
        command += ["--threads", str(args.threads)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[k] = json.loads(out.strip().splitlines()[-1])
    print(f"one update, global batch {args.batch}, {args.threads} thread(s), fresh process per k")
    print(f"{'k':>3} {'micro':>5} {'peak RSS MiB':>12} {'update growth MiB':>17} {'s':>6} loss")
    for k, r in results.items():
        print(
            f"{k:>3} {args.batch // k:>5} {r['peak']:>12.1f} {r['growth']:>17.1f} "
            f"{r['seconds']:>6.2f} {r['loss']:.6f}"
        )
    if args.json:
        reference = results[args.ks[0]]
        rows = []
        for k, r in results.items():
            for what, key in (("peak RSS", "peak"), ("update RSS growth", "growth")):
                rows.append(
                    {
                        "benchmark": "clap-core",
                        "case": f"accumulation {what}, batch {args.batch}, k={k}",
                        "unit": "MiB",
                        "reference": round(reference[key], 1),
                        "clapkit": round(r[key], 1),
                    }
                )
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
