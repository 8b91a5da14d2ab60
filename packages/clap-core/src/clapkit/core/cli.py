"""The ``clapkit`` command: ``embed``, ``zero-shot`` and ``convert``.

Examples::

    clapkit convert msclap CLAP_weights_2023.pth clap-2023 --version 2023 --tokenizer gpt2
    clapkit embed clap-2023 a.wav b.flac -o embeddings.safetensors
    clapkit embed clap-2023 --text "a dog barks" "rain" -o text.npy
    clapkit zero-shot clap-2023 a.wav b.flac --labels dog rain siren --top-k 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from clapkit.core.model import ClapModel

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``clapkit`` command."""
    parser = argparse.ArgumentParser(prog="clapkit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="audio files (or texts) -> embeddings file")
    embed.add_argument("model", help="clapkit model folder or hub id")
    embed.add_argument("inputs", nargs="+", help="audio files, or texts with --text")
    embed.add_argument("-o", "--output", required=True, type=Path, help=".safetensors or .npy")
    embed.add_argument("--text", action="store_true", help="the inputs are texts")
    embed.add_argument("--no-normalize", action="store_true", help="keep unnormalised vectors")
    _inference_options(embed)

    zero_shot = commands.add_parser("zero-shot", help="classify audio files with text labels")
    zero_shot.add_argument("model", help="clapkit model folder or hub id")
    zero_shot.add_argument("inputs", nargs="+", help="audio files")
    zero_shot.add_argument("--labels", nargs="+", required=True, help="class names")
    zero_shot.add_argument(
        "--template", action="append", help="prompt with {} (repeat to ensemble several)"
    )
    zero_shot.add_argument("--multilabel", action="store_true", help="sigmoid per class")
    zero_shot.add_argument("--top-k", type=int, default=3, help="labels shown per file")
    zero_shot.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _inference_options(zero_shot)

    convert = commands.add_parser("convert", help="msclap / LAION / transformers -> clapkit folder")
    convert.add_argument("source", choices=("msclap", "laion", "transformers"))
    convert.add_argument("checkpoint", help="checkpoint file (or transformers folder)")
    convert.add_argument("output", type=Path, help="clapkit folder to write")
    convert.add_argument("--version", default="2023", help="msclap: 2022 or 2023")
    convert.add_argument("--audio", default="htsat-tiny", help="LAION audio encoder")
    convert.add_argument("--text-encoder", default="roberta", help="LAION text encoder")
    convert.add_argument("--tokenizer", help="tokenizer hub id or folder")
    return parser


def _inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--long-audio", choices=("mean", "center"), default="mean")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _load(args: argparse.Namespace) -> ClapModel:
    return ClapModel.from_pretrained(args.model).to(args.device)


def _embed(args: argparse.Namespace) -> None:
    suffix = args.output.suffix
    if suffix not in (".npy", ".safetensors"):
        raise SystemExit(
            f"clapkit embed: output must end in .npy or .safetensors, got {args.output}"
        )
    if not args.output.parent.is_dir():  # said before any audio is embedded
        raise FileNotFoundError(f"no folder {args.output.parent} to write {args.output.name} in")
    model = _load(args)
    progress = False if args.quiet else None
    if args.text:
        embeds = model.embed_text(args.inputs, normalize=not args.no_normalize, progress=progress)
    else:
        embeds = model.embed_audio(
            [Path(p) for p in args.inputs],
            normalize=not args.no_normalize,
            batch_size=args.batch_size,
            long_audio=args.long_audio,
            progress=progress,
        )
    embeds = embeds.float().cpu()
    # written beside the output, then renamed over it: an earlier file is replaced whole or kept
    partial = args.output.with_name(f".{args.output.stem}.partial{suffix}")
    try:
        if suffix == ".npy":
            np.save(partial, embeds.numpy())
        else:
            metadata = {"inputs": json.dumps(args.inputs)}
            save_file({"embeddings": embeds.contiguous()}, partial, metadata=metadata)
        os.replace(partial, args.output)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {tuple(embeds.shape)} embeddings to {args.output}", file=sys.stderr)


def _zero_shot(args: argparse.Namespace) -> None:
    model = _load(args)
    templates = args.template or ["this is a sound of {}"]
    probs = model.zero_shot(
        [Path(p) for p in args.inputs],
        args.labels,
        template=templates,
        multilabel=args.multilabel,
        batch_size=args.batch_size,
        long_audio=args.long_audio,
    ).cpu()
    k = max(1, min(args.top_k, len(args.labels)))
    top = probs.topk(k, dim=-1)
    rows = [
        [
            path,
            *(
                f"{args.labels[i]}:{p:.4f}"
                for p, i in zip(values.tolist(), indices.tolist(), strict=False)
            ),
        ]
        for path, values, indices in zip(args.inputs, top.values, top.indices, strict=False)
    ]
    if args.format == "json":
        table = [
            dict(zip(args.labels, row.tolist(), strict=False)) | {"file": path}
            for path, row in zip(args.inputs, probs, strict=False)
        ]
        print(json.dumps(table, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", *args.labels])
        writer.writerows(
            [path, *(f"{p:.6f}" for p in row.tolist())]
            for path, row in zip(args.inputs, probs, strict=False)
        )
    else:
        width = max(len(r[0]) for r in rows)
        print(f"{'file'.ljust(width)}  top-{k} ({'sigmoid' if args.multilabel else 'softmax'})")
        for row in rows:
            print(f"{row[0].ljust(width)}  " + "  ".join(row[1:]))


def _convert(args: argparse.Namespace) -> None:
    tokenizer = args.tokenizer
    if args.source == "msclap":
        model = ClapModel.from_msclap(args.checkpoint, version=args.version, tokenizer=tokenizer)
    elif args.source == "laion":
        model = ClapModel.from_laion(
            args.checkpoint, audio=args.audio, text=args.text_encoder, tokenizer=tokenizer
        )
    else:
        model = ClapModel.from_transformers(args.checkpoint, tokenizer=tokenizer)
    model.save_pretrained(args.output)
    print(f"wrote clapkit model to {args.output}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``clapkit`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0 on success, also when the reader of stdout closes the pipe; errors
        print one line and return 1).
    """
    args = build_parser().parse_args(argv)
    handlers = {"embed": _embed, "zero-shot": _zero_shot, "convert": _convert}
    try:
        handlers[args.command](args)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (``clapkit zero-shot ... | head``): stop quietly; stdout goes to
        # devnull so that the interpreter's final flush does not complain either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as error:
        print(f"clapkit {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
