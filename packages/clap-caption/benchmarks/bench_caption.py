"""Captions per second: clapkit's batched, cached decoding vs msclap's ``generate_caption``.

Same random weights (msclap's clapcap layout, loaded by both), same files, CPU, beam 5,
batch 8, in one run. msclap decodes clip by clip and recomputes the whole sequence (and the
vocabulary logits of every position) at each step; clapkit decodes the batch with a key/value
cache. Random GPT2 weights never emit the stop token, so every clip decodes the full
``--max-new-tokens`` on both sides (msclap's worst case, identical work).

Run from the repository root in the parity environment (msclap installed: ``nox -s parity``'s
venv, or any venv with ``tools/parity-references.txt`` installed ``--no-deps`` +
``tools/parity-deps.txt``)::

    HF_HUB_OFFLINE=1 python packages/clap-caption/benchmarks/bench_caption.py \
        --json bench-caption.json

``--quick`` (2 clips, 16 tokens) finishes in a few minutes on 2 cores; the full default takes
about 20 minutes there, nearly all of it msclap's. ``--json PATH`` also writes
``{"rows": [{"benchmark", "case", "unit", "reference", "clapkit"}]}``
(clips captioned per second; reference = msclap in the same run).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]


def _tokenizer_folder() -> Path:
    """GPT-2's real vocab.json + merges.txt, from the repository's data/reference."""
    return REPO / "data" / "reference" / "tokenizers" / "gpt2"


def _soundfile_load(path: str) -> tuple[torch.Tensor, int]:
    import soundfile

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


def _msclap_wrapper(checkpoint: Path, tokenizer: Path, build: bool) -> object:
    """msclap's CLAPWrapper with GPT2 and its tokenizer built offline."""
    import msclap.CLAPWrapper as wrapper_module  # noqa: N813
    import msclap.models.clap as clap_module
    import msclap.models.mapper as mapper_module
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, GPT2Tokenizer

    clap_module.AutoModel = types.SimpleNamespace(
        from_pretrained=lambda *_: GPT2Model(GPT2Config())
    )  # type: ignore[attr-defined]
    mapper_module.GPT2LMHeadModel = types.SimpleNamespace(  # type: ignore[attr-defined]
        from_pretrained=lambda *_: GPT2LMHeadModel(GPT2Config())
    )
    wrapper_module.AutoTokenizer = types.SimpleNamespace(  # type: ignore[attr-defined]
        from_pretrained=lambda *_: GPT2Tokenizer.from_pretrained(str(tokenizer))
    )
    wrapper_module.torchaudio = types.SimpleNamespace(load=_soundfile_load)  # type: ignore[attr-defined]
    if build:
        from msclap.models.clap import CLAP
        from msclap.models.mapper import ClapCaptionModel

        clap = CLAP(
            audioenc_name="HTSAT",
            sample_rate=44100,
            window_size=1024,
            hop_size=320,
            mel_bins=64,
            fmin=50,
            fmax=8000,
            classes_num=527,
            out_emb=768,
            text_model="gpt2",
            transformer_embed_dim=768,
            d_proj=1024,
        )
        model = ClapCaptionModel(clap, "gpt2", 40, 40, 1024, 8, True, "transformer", True, True)
        torch.save({"model": model.state_dict()}, checkpoint)
    return wrapper_module.CLAPWrapper(str(checkpoint), version="clapcap")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=67)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 clips and 16 tokens (msclap's uncached decoding takes minutes per clip at 67)",
    )
    args = parser.parse_args()
    if args.quick:
        args.clips, args.max_new_tokens = min(args.clips, 2), min(args.max_new_tokens, 16)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from clapkit.caption import ClapCaptioner

    tokenizer = _tokenizer_folder()
    files = sorted((REPO / "data" / "fsdd" / "recordings").glob("*_theo_1*.flac"))[: args.clips]
    paths = [str(f) for f in files]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "clapcap_weights_2023.pth"
        wrapper = _msclap_wrapper(checkpoint, tokenizer, build=True)
        captioner = ClapCaptioner.from_msclap(checkpoint, tokenizer=tokenizer)
    print(
        f"{len(paths)} clips, beam {args.beam_size}, {args.max_new_tokens} tokens, "
        f"{torch.get_num_threads()} threads, CPU"
    )
    with torch.no_grad():
        start = time.perf_counter()
        theirs = wrapper.generate_caption(  # type: ignore[attr-defined]
            paths, beam_size=args.beam_size, entry_length=args.max_new_tokens
        )
        msclap_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ours = captioner.generate(
        paths,
        beam_size=args.beam_size,
        max_new_tokens=args.max_new_tokens,
        compatibility="msclap",
        batch_size=8,
    )
    clapkit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    captioner.generate(
        paths, beam_size=args.beam_size, max_new_tokens=args.max_new_tokens, batch_size=8
    )
    default_seconds = time.perf_counter() - start
    n = len(paths)
    print(f"msclap generate_caption          : {n / msclap_seconds:7.3f} captions/s (1.00x)")
    print(
        f"clapkit, msclap-compatible search: {n / clapkit_seconds:7.3f} captions/s "
        f"({msclap_seconds / clapkit_seconds:.2f}x), same captions: {ours == theirs}"
    )
    print(
        f"clapkit, default beam search     : {n / default_seconds:7.3f} captions/s "
        f"({msclap_seconds / default_seconds:.2f}x)"
    )
    if args.json is not None:
        setting = f"{n} FSDD clips, beam {args.beam_size}, {args.max_new_tokens} tokens"
        rows = [
            {
                "benchmark": "clap-caption",
                "case": f"generate, msclap-compatible search, {setting}",
                "unit": "clips/s",
                "reference": n / msclap_seconds,
                "clapkit": n / clapkit_seconds,
            },
            {
                "benchmark": "clap-caption",
                "case": f"generate, default beam search, {setting}",
                "unit": "clips/s",
                "reference": n / msclap_seconds,
                "clapkit": n / default_seconds,
            },
        ]
        args.json.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
