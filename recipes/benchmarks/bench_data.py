"""Benchmark: data pipeline clips/s per worker, and training samples/s of table1-htsat22-gpt2.

Run from the repository root (CPU; a GPU is used for the training part when present):
    python recipes/benchmarks/bench_data.py [--clips 48] [--steps 3] [--batch-size 2]
        [--quick] [--json out.json]

Part 1 generates 10 s FLAC files at 44.1 kHz and times, per DataLoader worker, the baseline
``soundfile`` decode alone, then ``ManifestDataset`` items (decode + resample + random 7 s crop)
for the paper's 44.1 kHz front end (no resampling) and for a 32 kHz front end (resampling),
with 0 and 2 workers. Part 2 times full-size HTSAT-22 + GPT2 (124M) training steps (random
weights, fp32 on CPU, bf16 autocast on GPU) and prints samples/s. ``--quick``: 8 clips, one
step. ``--json`` writes the figures as bench rows: the data rows take soundfile's decode alone as
their reference figure (the ratio is the pipeline's cost over bare decoding); training has none.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

RECIPES = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(RECIPES))

from clapkit.audio import htsat_22  # noqa: E402
from clapkit.data import ClapCollator, ManifestDataset, ManifestRecord  # noqa: E402

# GPT-2's real vocabulary, shipped in the repository (data/reference/README.md).
GPT2_TOKENIZER = RECIPES.parent / "data" / "reference" / "tokenizers" / "gpt2"
Row = dict[str, object]


def _row(case: str, unit: str, reference: float | None, clapkit: float) -> Row:
    return {
        "benchmark": "recipes",
        "case": case,
        "unit": unit,
        "reference": reference,
        "clapkit": clapkit,
    }


def make_flacs(folder: Path, count: int, seconds: float = 10.0, rate: int = 44100) -> list[Path]:
    """Noise plus a sweeping tone, 16-bit FLAC at ``rate``."""
    generator = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    paths = []
    for i in range(count):
        tone = 0.3 * np.sin(2 * math.pi * (200 + 50 * i) * t * (1 + t / seconds))
        wave = (tone + 0.05 * generator.standard_normal(t.shape)).astype(np.float32)
        paths.append(folder / f"clip{i:03d}.flac")
        sf.write(paths[-1], wave, rate, subtype="PCM_16")
    return paths


def clips_per_second(dataset: torch.utils.data.Dataset, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=ClapCollator())
    start = time.perf_counter()
    count = sum(batch["waveform"].shape[0] for batch in loader)
    return count / (time.perf_counter() - start)


def bench_data(clips: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_flacs(Path(tmp), clips)
        start = time.perf_counter()
        for path in paths:
            sf.read(path, dtype="float32")
        baseline = clips / (time.perf_counter() - start)
        print(f"\n[data] {clips} FLAC clips, 10 s, 44.1 kHz; batch 8; figures per worker")
        print(f"  baseline soundfile decode only (1 process): {baseline:8.1f} clips/s = 1.00x")
        rows = []
        records = [ManifestRecord(audio=p, captions=("a tone",), key=p.stem) for p in paths]
        paper = dataclasses.replace(htsat_22().frontend, clip_seconds=7.0)
        for name, frontend in (
            ("44.1 kHz, no resample", paper),
            (
                "-> 32 kHz resample",
                dataclasses.replace(paper, sample_rate=32000, filterbank_rate=None),
            ),
        ):
            dataset = ManifestDataset(records, frontend, train=True)
            for workers in (0, 2):
                rate = clips_per_second(dataset, workers) / max(workers, 1)
                print(
                    f"  decode + {name} + 7 s crop, {workers} workers: {rate:8.1f} clips/s "
                    f"per worker = {rate / baseline:.2f}x"
                )
                case = f"data {name}, {workers} workers, per worker (ref: soundfile decode)"
                rows.append(_row(case, "clips/s", baseline, rate))
    return rows


def bench_training(steps: int, batch_size: int) -> list[Row]:
    from pretrain_clap import PRESETS

    from clapkit.core import ContrastiveLoss, build_clap
    from clapkit.train.demo import build_encoders

    cfg = dataclasses.replace(
        PRESETS["table1-htsat22-gpt2"], text_pretrained=None, tokenizer=str(GPT2_TOKENIZER)
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    audio, text = build_encoders(cfg, [])
    model = build_clap(audio=audio, text=text, projection_dim=cfg.projection_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = ContrastiveLoss()
    samples = round(7.0 * model.sample_rate)
    waveform = torch.randn(batch_size, samples, device=device) * 0.1
    captions = [f"a sound of thing number {i} in a room" for i in range(batch_size)]
    tokens = {k: v.to(device) for k, v in model.text_encoder.tokenize(captions).items()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    timings = []
    for step in range(steps + 1):  # the first step warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            out = model(waveform, **tokens)
            loss = loss_fn(out.audio_embeds, out.text_embeds, out.logit_scale_exp)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            timings.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    rate = batch_size * len(timings) / sum(timings)
    print(
        f"\n[train] table1-htsat22-gpt2 full size ({params:.0f}M parameters), 7 s clips, "
        f"batch {batch_size}, {steps} steps on {device.type}"
        f"{' (bf16 autocast)' if device.type == 'cuda' else ' (fp32)'}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  {rate:.2f} samples/s ({sum(timings) / len(timings):.2f} s/step)")
    case = f"train table1-htsat22-gpt2, batch {batch_size}, {device.type}"
    return [_row(case, "samples/s", None, rate)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--quick", action="store_true", help="8 clips, one training step")
    parser.add_argument("--json", type=Path, help="also write the figures here (bench rows)")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.steps = 8, 1
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    rows = bench_data(args.clips)
    if not args.skip_training:
        rows += bench_training(args.steps, args.batch_size)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
