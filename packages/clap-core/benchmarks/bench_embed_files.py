"""Files -> audio embeddings throughput: clapkit vs msclap's CLAPWrapper, same weights, CPU.

Run from the repository root in an environment holding msclap (``nox -s parity``'s venv, or
any venv with ``tools/parity-references.txt`` installed ``--no-deps`` + ``tools/parity-deps.txt``)::

    HF_HUB_OFFLINE=1 python packages/clap-core/benchmarks/bench_embed_files.py --files 48 \
        --json bench-core.json

Both sides embed the same FSDD FLAC files (8 kHz, decoded and resampled to 44.1 kHz, filled
to 7 s), then as many synthesized FLAC files of ``--synth-seconds`` (5) at 44.1 kHz, with the
msclap 2023 architecture (HTSAT + projection) holding the same random weights, in batches of
``--batch-size`` files; the median of ``--repeats`` timed runs (the two sides taking turns) is
reported as clips/s and as the ratio clapkit / msclap measured in this run, with the ratio of
the two audio encoders alone on one batch of clip-long windows (the ceiling of the files'
ratio where decoding costs little: 44.1 kHz files, no resampling), and the encoders' GFLOP/s
against this CPU's float32 GEMM rate measured in the same run (the ratio an encoder running at
that peak would reach). On a machine shared with
other jobs give ``--threads 1``: two intra-op threads on two busy cores wait on each other and
measure the scheduler (2-2.5x slower, measured), not the code. msclap's ``torchaudio.load``
(which needs torchcodec in torchaudio >= 2.9) is replaced by a soundfile reader; GPT2 is built
offline with random weights (the text side is not timed). ``--json PATH`` also writes
``{"rows": [{"benchmark", "case", "unit", "reference", "clapkit"}]}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[3]
GPT2_FILES = ROOT / "data" / "reference" / "tokenizers" / "gpt2"


def _soundfile_load(path: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


def _msclap_wrapper(folder: Path, tokenizer_dir: Path) -> tuple[Any, Path]:
    import msclap.models.clap as clap_module
    import transformers

    wrapper_module = importlib.import_module("msclap.CLAPWrapper")
    empty = folder / "empty.pth"
    torch.save({"model": {}}, empty)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(tokenizer_dir))
    tokenizer.encode_plus = lambda text, **kwargs: tokenizer(text, **kwargs)  # removed in v5
    with (
        mock.patch.object(
            clap_module.AutoModel,
            "from_pretrained",
            side_effect=lambda *a, **k: transformers.GPT2Model(transformers.GPT2Config()),
        ),
        mock.patch.object(
            wrapper_module.AutoTokenizer, "from_pretrained", side_effect=lambda *a, **k: tokenizer
        ),
    ):
        wrapper = wrapper_module.CLAPWrapper(model_fp=str(empty), version="2023")
    wrapper.clap.eval()
    path = folder / "CLAP_weights_2023.pth"
    torch.save({"model": wrapper.clap.state_dict()}, path)
    return wrapper, path


def _time_in_turn(
    runs: dict[str, Callable[[], torch.Tensor]], repeats: int
) -> dict[str, tuple[float, torch.Tensor]]:
    """Median seconds and last result of each run, the runs taking turns ``repeats`` times.

    Taking turns puts both sides in the same moments of a shared machine's load, so their
    ratio holds better than two medians measured one after the other.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, torch.Tensor] = {}
    for run in runs.values():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--gpt2", type=Path, default=GPT2_FILES, help="folder with GPT-2 vocab")
    parser.add_argument(
        "--synth-seconds",
        type=float,
        default=5.0,
        help="also compare on --files synthesized FLAC files of this length at 44.1 kHz (0: no)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from clapkit.core import ClapModel

    fsdd = sorted((ROOT / "data" / "fsdd" / "recordings").glob("*.flac"))[: args.files]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wrapper, path = _msclap_wrapper(Path(tmp), args.gpt2)
        ours = ClapModel.from_msclap(path, version="2023", tokenizer=args.gpt2).eval()
        cases = [("FSDD files (8 kHz)", fsdd)]
        if args.synth_seconds > 0:
            tones = _tones(Path(tmp), args.files, args.synth_seconds)
            cases.append((f"{args.synth_seconds:g} s 44.1 kHz FLAC files", tones))
        for label, files in cases:
            rows.append(_compare(wrapper, ours, files, label, args))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))


def _tones(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` 16-bit FLAC files of ``seconds`` at 44.1 kHz: a tone in noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 44100)) / 44100
    paths = []
    for i in range(count):
        wave = 0.3 * np.sin(2 * np.pi * (220 + 20 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        paths.append(folder / f"tone{i:03d}.flac")
        sf.write(paths[-1], wave.astype(np.float32), 44100, subtype="PCM_16")
    return paths


def _compare(wrapper: Any, ours: Any, files: list[Path], label: str, args: Any) -> dict[str, Any]:
    """Time both sides on ``files``; print the figures and the ratio; return the bench row."""

    def run_msclap() -> torch.Tensor:
        with torch.no_grad(), mock.patch("msclap.CLAPWrapper.torchaudio.load", _soundfile_load):
            parts = [
                wrapper.get_audio_embeddings([str(f) for f in files[i : i + args.batch_size]])
                for i in range(0, len(files), args.batch_size)
            ]
        return torch.cat(parts)

    def run_clapkit() -> torch.Tensor:
        return ours.embed_audio(files, batch_size=args.batch_size, normalize=False, progress=False)

    # the audio encoders alone on one batch of clip-long windows: the ceiling of the ratio
    windows = torch.randn(
        min(args.batch_size, len(files)), ours.audio_encoder.frontend.clip_samples
    )

    def model_msclap() -> torch.Tensor:
        with torch.no_grad():
            return wrapper.clap.audio_encoder(windows)[0]

    def model_clapkit() -> torch.Tensor:
        with torch.no_grad():
            return ours.encode_audio(windows, fast=None)

    timed = _time_in_turn(
        {"msclap": run_msclap, "clapkit": run_clapkit, "model msclap": model_msclap,
         "model clapkit": model_clapkit},
        args.repeats,
    )  # fmt: skip
    (msclap_s, msclap_out), (clapkit_s, clapkit_out) = timed["msclap"], timed["clapkit"]
    model_ratio = timed["model msclap"][0] / timed["model clapkit"][0]
    error = ((clapkit_out - msclap_out).norm(dim=-1) / msclap_out.norm(dim=-1)).max().item()
    n = len(files)
    print(f"msclap 2023 architecture, {n} {label}, batch {args.batch_size}, "
          f"{args.threads} threads, median of {args.repeats} in turn")  # fmt: skip
    print(f"msclap CLAPWrapper : {n / msclap_s:7.2f} clips/s")
    print(f"clapkit embed_audio: {n / clapkit_s:7.2f} clips/s")
    print(
        f"ratio clapkit/msclap: {msclap_s / clapkit_s:.2f}x  (max relative difference {error:.1e})"
    )
    print(f"audio encoders alone, {len(windows)} windows: clapkit/msclap {model_ratio:.2f}x")
    flops, peak = _encoder_flops(ours.audio_encoder, windows), _gemm_peak()
    msclap_rate = flops / timed["model msclap"][0] / 1e9
    clapkit_rate = flops / timed["model clapkit"][0] / 1e9
    print(
        f"audio encoders, {flops / 1e9:.0f} GFLOP a batch: msclap {msclap_rate:.0f} GFLOP/s, "
        f"clapkit {clapkit_rate:.0f} GFLOP/s ({clapkit_rate / peak:.0%} of this CPU's float32 "
        f"GEMM, {peak:.0f} GFLOP/s); at that peak the ratio could reach {peak / msclap_rate:.2f}x"
    )
    sys.stdout.flush()
    return {
        "benchmark": "clap-core",
        "case": f"embed_audio, msclap 2023 HTSAT, {n} {label}, batch {args.batch_size}",
        "unit": "clips/s",
        "reference": n / msclap_s,
        "clapkit": n / clapkit_s,
    }


def _encoder_flops(encoder: torch.nn.Module, windows: torch.Tensor) -> int:
    """Floating-point operations of one plain forward pass (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(windows)
    return int(counter.get_total_flops())


def _gemm_peak(size: int = 2048, repeats: int = 5) -> float:
    """This CPU's float32 GEMM rate (GFLOP/s, best of ``repeats``) at the threads set: the most
    an encoder made of matrix products can run at."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
