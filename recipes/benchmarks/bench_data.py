"""Benchmark: data pipeline clips/s per worker against the decoder alone, and training samples/s.

Run from the repository root (CPU; a GPU is used for the training part when present):
    python recipes/benchmarks/bench_data.py [--files 6] [--workers 2] [--rounds 3] [--steps 3]
        [--batch-size 2] [--skip-training] [--quick] [--json out.json]

Part 1 writes 16-bit FLAC files of 5 s, 30 s and 300 s at 44.1 kHz and at 16 kHz and times, per
process, on the same files: (a) soundfile reading a 7 s crop's frames alone (the limit), the
former path (whole decode, ``torchaudio.functional.resample`` without a cache, then the crop),
(b) ``load_crop`` at the file's rate, (c) ``load_crop`` resampled (16 kHz files to the paper's
44.1 kHz, 44.1 kHz files to 48 kHz), (e) for the 16 kHz files, ``load_crop`` of copies resampled
once to 44.1 kHz as 24-bit FLAC (what ``clapkit-make-shards --resample-to`` stores), and (d)
``ManifestDataset`` and ``ShardDataset`` loaders to collated batches (0 and ``--workers``
workers, per worker), with the workers one GPU needs for 5,000 samples/s (from the workers'
own rate when ``--workers`` > 0) and the extra cost a worker pays for every batch: stacking it
into fresh shared memory to send it (against recycled memory in-process). Every figure is
printed with its ratio to (a) measured in the same run: the cases of one file set take turns
for ``--rounds`` rounds and each keeps its best round. Each decoding case is also printed as
its gain over the former path, with (a)'s gain: the ceiling of any loader on this decoder. It
also prints the memory a 7 s crop of a 60 s file takes while decoding and keeps, by the former
path and by ``load_crop``. Part 2 times full-size HTSAT-22 + GPT2 (124M) training steps (random
weights, fp32 on CPU, bf16 autocast on GPU). ``--quick``: one file per duration and rate, no
workers, one training step. ``--json`` writes the figures as bench rows (reference: (a)).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import DataLoader

RECIPES = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(RECIPES))

from clapkit.audio import fit_length, htsat_22, load_crop  # noqa: E402
from clapkit.data import (  # noqa: E402
    BatchBuffers,
    ClapCollator,
    ManifestDataset,
    ManifestRecord,
    ShardDataset,
    give_back,
    write_shards,
)

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
        paths.append(folder / f"clip{seconds:g}s{rate}_{i:03d}.flac")
        sf.write(paths[-1], wave, rate, subtype="PCM_16")
    return paths


def resampled_once(paths: list[Path], rate: int) -> list[Path]:
    """The files decoded, resampled to ``rate`` and stored as 24-bit FLAC, as
    ``clapkit-make-shards --resample-to`` stores them (its epochs never resample)."""
    from clapkit.audio import load_audio

    copies = []
    for path in paths:
        copies.append(path.with_name(f"{path.stem}_at{rate}.flac"))
        sf.write(copies[-1], load_audio(path, rate).numpy(), rate, subtype="PCM_24")
    return copies


def decoder_alone(crop: int) -> Callable[[Path, torch.Generator], object]:
    """(a), the limit: soundfile reading a random crop's frames (one open, a seek, a read)."""

    def limit(path: Path, g: torch.Generator) -> object:
        with sf.SoundFile(path) as audio:  # one open, as load_crop does
            first = int(torch.randint(0, audio.frames - crop + 1, (1,), generator=g))
            audio.seek(first)
            return audio.read(crop, dtype="float32")

    return limit


def per_second(work: Callable[[Path, torch.Generator], object], paths: list[Path]) -> float:
    """Clips/s of ``work`` over ``paths``, passes repeated for at least 0.3 s (one process)."""
    done, start, generator = 0, time.perf_counter(), torch.Generator().manual_seed(0)
    while done == 0 or time.perf_counter() - start < 0.3:
        for path in paths:
            work(path, generator)
        done += len(paths)
    return done / (time.perf_counter() - start)


def loader_per_worker(dataset: Any, workers: int, reuse: bool = False) -> float:
    """Clips/s per worker of a DataLoader to collated batches of 8, after its warm-up.

    Left out, in every case: the workers' start (process start, first shard opened: once per
    epoch) and each worker's first 3 batches (with ``reuse``, where it makes its 3 buffers: once
    per run with persistent workers). ``reuse``: the workers stack into :class:`BatchBuffers`,
    every batch given back as the training loop does.
    """
    buffers = BatchBuffers(slots=3) if reuse else None
    collate = ClapCollator(buffers=buffers)
    loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate)
    batches = iter(loader)
    for _ in range(1 + 3 * workers):
        give_back(next(batches))
    start = time.perf_counter()
    count = sum(give_back(batch)["waveform"].shape[0] for batch in batches)
    return count / (time.perf_counter() - start) / max(workers, 1)


def bench_data(
    files: int, durations: tuple[float, ...], workers: int, rounds: int = 3
) -> list[Row]:
    """Decoding cases (a)-(c) and whole loaders (d), per process, against the decoder alone."""
    paper = dataclasses.replace(htsat_22().frontend, clip_seconds=7.0)
    n, rows = paper.clip_samples, []
    print(
        f"\n[data] 16-bit FLAC, 7 s training crops for a {paper.sample_rate} Hz front end; "
        "clips/s per process (= per DataLoader worker); ratio: against (a) of the same files"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in durations:
            for rate in (44100, 16000):
                paths = make_flacs(Path(tmp), files, seconds, rate)
                crop = min(n * rate // paper.sample_rate, int(seconds * rate))
                other = 48000 if rate == paper.sample_rate else paper.sample_rate  # a real resample

                def whole_then_crop(path: Path, g: torch.Generator) -> object:  # before
                    # load_audio before issue 24: all frames, a NaN/inf check of all, the mean
                    data, source = sf.read(path, dtype="float32", always_2d=True)
                    if not np.isfinite(data).all():
                        raise ValueError(f"{path}: non-finite samples")
                    wave = torch.from_numpy(data.mean(axis=1, dtype=np.float32))
                    if source != paper.sample_rate:
                        wave = torchaudio.functional.resample(wave, source, paper.sample_rate)
                    return fit_length(wave, n, "random_crop", g, fill="repeat")

                def crop_at(target: int) -> Callable[[Path, torch.Generator], object]:
                    size = n * target // paper.sample_rate

                    def work(path: Path, g: torch.Generator) -> object:
                        def draw(length: int) -> int:
                            return int(torch.randint(0, length - size + 1, (1,), generator=g))

                        return load_crop(path, target, size, draw)

                    return work

                works = {
                    "(a) decoder alone (soundfile: the crop's frames)": decoder_alone(crop),
                    "before: whole decode + uncached resample + crop": whole_then_crop,
                    "(b) crop decode (load_crop, native rate)": crop_at(rate),
                    f"(c) crop decode + resample to {other}": crop_at(other),
                }
                cases = {case: functools.partial(per_second, w, paths) for case, w in works.items()}
                if rate != paper.sample_rate:  # what training reads from resampled shards
                    once = resampled_once(paths, paper.sample_rate)
                    cases["(e) crop decode of a copy resampled once (make-shards)"] = (
                        functools.partial(per_second, crop_at(paper.sample_rate), once)
                    )
                figures = interleaved(cases, rounds)
                rows += _report(f"{seconds:g} s at {rate} Hz", figures)
                # against the former path, the cases that also end at the front end's rate
                same = ("(a)", "(b)") if rate == paper.sample_rate else ("(c)", "(e)")
                rows += _gains(f"{seconds:g} s at {rate} Hz", figures, same)
        rows += shared_batch_cost(n)
        rows += _loaders(Path(tmp), files, durations, paper, workers, rounds)
        rows += crop_memory(Path(tmp))
    return rows


def crop_memory(folder: Path, n_seconds: float = 7.0, seconds: float = 60.0) -> list[Row]:
    """Peak and kept memory (MB) of one 7 s crop of a 60 s stereo 44.1 kHz FLAC, before/after.

    ``tracemalloc`` sees numpy's buffers (the decoded samples); both paths stay at the file's
    rate so that no torch-only buffer escapes it.
    """
    rate = 44100
    n, path = int(n_seconds * rate), folder / "minute.flac"
    noise = np.random.default_rng(0).standard_normal((int(seconds * rate), 2)) * 0.2
    sf.write(path, noise.astype(np.float32), rate, subtype="PCM_16")
    generator = torch.Generator().manual_seed(0)
    tracemalloc.start()
    data, _ = sf.read(path, dtype="float32", always_2d=True)  # the former path: all, then crop
    mono = torch.from_numpy(data.mean(axis=1, dtype=np.float32))
    crop = fit_length(mono, n, "random_crop", generator)
    del data, mono
    peaks, kept = {"before": tracemalloc.get_traced_memory()[1]}, {}
    kept["before"] = crop.untyped_storage().nbytes()
    del crop  # what it kept alive goes before the next measure
    tracemalloc.reset_peak()
    crop = load_crop(path, rate, n, lambda length: (length - n) // 3)
    peaks["after"], kept["after"] = (
        tracemalloc.get_traced_memory()[1],
        crop.untyped_storage().nbytes(),
    )
    tracemalloc.stop()
    print(f"\n[memory] a 7 s crop of a {seconds:g} s stereo 44.1 kHz FLAC, per worker:")
    rows = []
    for when in ("before", "after"):
        held = kept[when] / 1e6
        print(f"  {when:<6}: peak {peaks[when] / 1e6:5.1f} MB while decoding, {held:5.2f} MB kept")
        rows.append(_row(f"memory kept by a 7 s crop of 60 s, {when}", "MB", None, held))
    return rows


def _loaders(
    folder: Path, files: int, durations: tuple[float, ...], paper: Any, workers: int, rounds: int
) -> list[Row]:
    """(d) ManifestDataset and ShardDataset to collated batches, 44.1 kHz files."""
    rows: list[Row] = []
    for seconds in durations:
        paths = sorted(folder.glob(f"clip{seconds:g}s44100_*.flac"))
        records = [ManifestRecord(audio=p, captions=("a tone",), key=p.stem) for p in paths]
        shards = write_shards(records, folder / f"shards{seconds:g}", samples_per_shard=4)
        # 96 timed clips (12 batches) or more after the warm-up batches
        repeats = math.ceil((96 + 8 * (1 + 3 * workers)) / len(records))
        limit = decoder_alone(min(paper.clip_samples, int(seconds * 44100)))
        cases = {
            "(a) decoder alone (soundfile: the crop's frames)": functools.partial(
                per_second, limit, paths
            )
        }
        for count in sorted({0, workers}):
            manifest = ManifestDataset(records * repeats, paper, train=True)
            stream = ShardDataset(
                [str(s) for s in shards] * repeats, paper, train=True, shuffle_buffer=16
            )
            for name, data in (("manifest", manifest), ("shard", stream)):
                cases[f"(d) {name} loader, {count} workers"] = functools.partial(
                    loader_per_worker, data, count
                )
                if count:  # the workers' batches in reused shared memory (BatchBuffers)
                    cases[f"(d) {name} loader, {count} workers, batch buffers"] = functools.partial(
                        loader_per_worker, data, count, True
                    )
        figures = interleaved(cases, rounds)
        rows += _report(f"loaders, {seconds:g} s at 44100 Hz", figures)
        # from the workers' own rate where measured: it pays the batches' shared memory
        # with workers: as the recipes' loaders run them, with batch buffers
        measured = f", {workers} workers" + (", batch buffers" if workers else "")
        slowest = min(v for k, v in figures.items() if k.startswith("(d)") and k.endswith(measured))
        where = f"with {workers} DataLoader workers and batch buffers" if workers else "in-process"
        print(
            f"  workers one GPU needs for 5,000 samples/s: {math.ceil(5000 / slowest)} "
            f"(the slowest loader {where}: {slowest:.0f} clips/s a worker)"
        )
    return rows


def shared_batch_cost(samples: int, batch: int = 8, repeats: int = 10) -> list[Row]:
    """ms to stack a batch into fresh shared memory (what a DataLoader worker does for every
    batch it sends) against recycled ordinary memory (in-process): the workers' extra cost."""
    clips = [torch.randn(samples) for _ in range(batch)]

    def fresh() -> object:
        out = torch.empty(batch, samples)
        return torch.stack(clips, out=out.share_memory_())

    def recycled() -> object:
        return torch.stack(clips)

    best = {}
    for name, work in (("fresh shared memory", fresh), ("recycled memory", recycled)):
        work()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        best[name] = min(times) * 1e3
    extra = (best["fresh shared memory"] - best["recycled memory"]) / batch
    print(
        f"\n[batches] stacking {batch} clips of {samples} samples: "
        f"{best['fresh shared memory']:.1f} ms into fresh shared memory (a worker's batch), "
        f"{best['recycled memory']:.1f} ms into recycled memory (in-process): "
        f"{extra:.2f} ms a clip more in a worker"
    )
    return [_row("stack a batch into fresh shared memory", "ms", best["recycled memory"],
                 best["fresh shared memory"])]  # fmt: skip


def interleaved(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each case's best clips/s over ``rounds`` rounds that run every case once in turn.

    On a machine shared with other jobs, a case measured alone can fall in a busy or a quiet
    moment; taking turns puts every case in the same moments, and the best round of each is the
    one least disturbed, so ratios between cases hold.
    """
    best = dict.fromkeys(cases, 0.0)
    for _ in range(rounds):
        for case, measure in cases.items():
            best[case] = max(best[case], measure())
    return best


def _report(title: str, figures: dict[str, float]) -> list[Row]:
    limit = next(iter(figures.values()))
    print(f"  {title}:")
    rows = []
    for case, rate in figures.items():
        print(f"    {case:<52} {rate:9.1f} clips/s = {rate / limit:5.2f}x (a)")
        rows.append(_row(f"data {title}: {case} (ref: (a))", "clips/s", limit, rate))
    return rows


def _gains(title: str, figures: dict[str, float], cases: tuple[str, ...]) -> list[Row]:
    """``cases`` (those giving the front end's rate) against the former path. At the front
    end's rate, (a)'s gain is the most any loader on this decoder can reach: it decodes the
    crop and does nothing else."""
    before = next(rate for case, rate in figures.items() if case.startswith("before"))
    rows, parts = [], []
    for case, rate in figures.items():
        if case.startswith(cases):
            parts.append(f"{case[:3]} {rate / before:.2f}x")
            rows.append(_row(f"data {title}: {case} (ref: before)", "clips/s", before, rate))
    ceiling = "  ((a): the ceiling on this decoder)" if "(a)" in cases else ""
    print(f"    gain over before: {', '.join(parts)}{ceiling}")
    return rows


def bench_training(steps: int, batch_size: int) -> list[Row]:
    from pretrain_clap import PRESETS

    from clapkit.core import ContrastiveLoss, build_clap
    from clapkit.train.demo import build_encoders

    cfg = dataclasses.replace(
        PRESETS["table1-htsat22-gpt2"], text_pretrained=None, tokenizer=str(GPT2_TOKENIZER)
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    audio, text = build_encoders(
        cfg.audio, cfg.text, "full", [], clip_seconds=cfg.clip_seconds, tokenizer=cfg.tokenizer
    )
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
    parser.add_argument("--files", type=int, default=6, help="files per duration and rate")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every case in turn; each case's best"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="1 file per duration and rate, no workers, one step"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here (bench rows)")
    args = parser.parse_args()
    durations = (5.0, 30.0, 300.0)
    if args.quick:
        args.files, args.steps, args.workers = 1, 1, 0
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    rows = bench_data(args.files, durations, args.workers, args.rounds)
    if not args.skip_training:
        rows += bench_training(args.steps, args.batch_size)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
