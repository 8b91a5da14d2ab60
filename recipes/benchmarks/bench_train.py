"""Training throughput of the paper model against transformers' ClapModel, in one run.

Run from the repository root::

    python recipes/benchmarks/bench_train.py --device cuda --precision bf16 --batch-size 64
    python recipes/benchmarks/bench_train.py --device cuda --precision bf16 --compile
    python recipes/benchmarks/bench_train.py --quick --json bench-train.json   # the CPU check

Both models have random weights at their real sizes and train on the same batch of 7 s clips
and captions padded to 32 tokens, with Adam (fused where torch has it): clapkit's paper model
(HTSAT-22 + GPT2-EOT, the msclap projections into 1024 dimensions, ``ContrastiveLoss``; its log-mel
front end runs inside the step) and transformers' ``ClapModel`` (HTSAT-tiny + RoBERTa, LAION's
default configuration; its mel features are computed once before timing, so its step does less
work than clapkit's). Each timed step is forward, loss, backward and optimizer step, with the
device synchronised at the end of each step. Reported per model: samples/s, training time per
sample, FLOPs per sample (``torch.utils.flop_counter``, forward + backward), achieved TFLOP/s,
MFU against the device's dense peak for the precision (``clapkit.train.throughput.PEAK_FLOPS``;
none on a CPU) and peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS
growth over the step, measured in a child process per model). ``--json PATH`` writes the rows
of ``tools/bench.py`` with transformers as the reference.
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

import torch

ROOT = Path(__file__).resolve().parents[2]
GPT2_FILES = ROOT / "data" / "reference" / "tokenizers" / "gpt2"
CAPTION_TOKENS = 32
CLIP_SECONDS = 7.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _gpt2_tokenizer() -> Any:
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]

    return GPT2TokenizerFast(
        vocab_file=str(GPT2_FILES / "vocab.json"), merges_file=str(GPT2_FILES / "merges.txt")
    )


def _captions(batch: int) -> list[str]:
    words = [
        "a",
        "dog",
        "barks",
        "while",
        "rain",
        "falls",
        "on",
        "the",
        "roof",
        "and",
        "a",
        "car",
        "passes",
        "by",
    ]
    return [" ".join(words[(i % 5) :] + words[: (i % 5)]) for i in range(batch)]


def clapkit_step(batch: int, device: torch.device) -> tuple[Any, Any]:
    """The paper model and a function running one training step on a fixed batch."""
    from transformers import GPT2Config

    from clapkit.core import ContrastiveLoss, build_clap

    tokenizer = _gpt2_tokenizer()
    config = GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = build_clap(
        "htsat-22", "gpt2-eot", text_kwargs={"config": config, "tokenizer": tokenizer}
    ).to(device)
    rate = model.audio_encoder.frontend.sample_rate
    waveform = 0.1 * torch.randn(batch, int(rate * CLIP_SECONDS), device=device)
    tokens = model.text_encoder.tokenize(_captions(batch), pad_to_multiple_of=CAPTION_TOKENS)
    tokens = {k: v.to(device) for k, v in tokens.items()}
    loss_fn = ContrastiveLoss(pad_to=batch)

    def forward() -> torch.Tensor:
        out = model(waveform, **tokens)
        loss: torch.Tensor = loss_fn(out.audio_embeds, out.text_embeds, out.logit_scale_exp)
        return loss

    return model, forward


def transformers_step(batch: int, device: torch.device) -> tuple[Any, Any]:
    """transformers' ClapModel (LAION's default configuration) and its training step."""
    import numpy as np
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).to(device)
    extractor = ClapFeatureExtractor()
    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(int(48000 * CLIP_SECONDS)) for _ in range(batch)]
    features = extractor(clips, sampling_rate=48000, truncation="rand_trunc", return_tensors="pt")[
        "input_features"
    ]  # LAION's non-fusion input: one 10 s crop
    tokenizer = _roberta_tokenizer()
    tokens = tokenizer(
        _captions(batch), padding="max_length", max_length=CAPTION_TOKENS, truncation=True,
        return_tensors="pt",
    )  # fmt: skip
    inputs = {"input_features": features.to(device), "input_ids": tokens["input_ids"].to(device),
              "attention_mask": tokens["attention_mask"].to(device)}  # fmt: skip

    def forward() -> torch.Tensor:
        loss: torch.Tensor = model(**inputs, return_loss=True).loss
        return loss

    return model, forward


def _roberta_tokenizer() -> Any:
    from clapkit.text.corpus import train_tokenizer

    # RoBERTa's vocabulary files are not in the repository: a byte-level BPE of the family,
    # trained on the captions (token ids fit the model's 50,265-word table)
    return train_tokenizer("roberta", _captions(8))


def measure(which: str, args: argparse.Namespace) -> dict[str, float]:
    """One model's figures (run in its own process, so that peak memory is its own)."""
    from clapkit.train.throughput import count_flops, peak_flops

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, forward = (clapkit_step if which == "clapkit" else transformers_step)(
        args.batch_size, device
    )
    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with autocast:
        flops = count_flops(lambda: forward().backward(), model) / args.batch_size
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **fused)
    if args.compile:
        model.compile()

    def step() -> None:
        with autocast:
            loss = forward()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    before = _peak_rss_mib()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - started) / args.steps
    memory = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else _peak_rss_mib() - before
    )
    samples = args.batch_size / seconds
    peak = peak_flops(device, args.precision, tf32=torch.backends.cuda.matmul.allow_tf32)
    return {
        "samples_per_s": samples,
        "ms_per_sample": 1000 / samples,
        "gflops_per_sample": flops / 1e9,
        "tflops": samples * flops / 1e12,
        "mfu": float("nan") if peak is None else samples * flops / peak,
        "peak_memory_mib": memory,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("no", "bf16"), default=None,
                        help="default: bf16 on CUDA, no elsewhere")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="the CPU check: batch 2, 2 steps")
    parser.add_argument("--json", type=Path, help="write tools/bench.py rows here")
    parser.add_argument("--child", choices=("clapkit", "transformers"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16" if cuda else "no")
    args.batch_size = args.batch_size or (2 if args.quick or not cuda else 64)
    args.steps = args.steps or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    results = {}
    for which in ("transformers", "clapkit"):
        command = [sys.executable, __file__, "--child", which, *sys.argv[1:]]
        command = [c for c in command if not c.startswith("--json") and c != str(args.json)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{which} failed:\n{done.stderr[-4000:]}")
        results[which] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"device {args.device}, precision {args.precision}, compile {args.compile}, "
          f"batch {args.batch_size}, {args.steps} timed steps")  # fmt: skip
    print(f"{'':24}{'transformers':>14}{'clapkit':>14}{'ratio':>8}")
    for key in results["clapkit"]:
        ref, ours = results["transformers"][key], results["clapkit"][key]
        ratio = ours / ref if ref else float("nan")
        print(f"{key:24}{ref:14.4g}{ours:14.4g}{ratio:8.2f}")
    if args.json:
        compiled = " compiled" if args.compile else ""
        case = f"{args.device} {args.precision}{compiled} b{args.batch_size}"
        rows = [
            {"benchmark": "train step (HTSAT-22+GPT2 vs HF ClapModel)", "case": f"{case} {key}",
             "unit": unit, "reference": results["transformers"][key],
             "clapkit": results["clapkit"][key]}
            for key, unit in (("ms_per_sample", "ms"), ("samples_per_s", "samples/s"),
                              ("tflops", "TFLOP/s"), ("peak_memory_mib", "MiB"))
        ]  # fmt: skip
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
