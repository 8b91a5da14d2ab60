"""The ``clapkit`` command: ``embed``, ``zero-shot``, ``retrieve``, ``caption``, ``convert``,
``pretrained`` and ``push``.

Every subcommand takes ``--quiet`` (no progress bar, no message on stderr) and ``--format``
(``json`` for every one); ``--device`` is checked before any model loads, and a device that is
not there is named (exit status 1). ``caption`` needs clapkit-caption, found by name at run time
(core sits below it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from clapkit.core.catalog import list_pretrained, pretrained_table
from clapkit.core.cli_output import write_captions, write_hits, write_scores
from clapkit.core.devices import DeviceError, check_device
from clapkit.core.hub_card import model_card, push_folder_to_hub
from clapkit.core.model import ClapModel

__all__ = ["DeviceError", "build_parser", "check_device", "main", "versions"]

DESCRIPTION = (
    "clapkit: CLAP audio and text embeddings, zero-shot classification, text-to-audio "
    "retrieval, audio captioning and checkpoint conversion."
)
EPILOG = """examples:
  clapkit convert msclap CLAP_weights_2023.pth clap-2023 --version 2023 --tokenizer gpt2
  clapkit convert clapkit my-laion-clap hf-clap --to transformers
  clapkit embed clap-2023 a.wav b.flac -o embeddings.safetensors
  clapkit embed clap-2023 --text "a dog barks" "rain" -o text.npy
  clapkit zero-shot clap-2023 a.wav b.flac --labels dog rain siren --top-k 2
  clapkit retrieve clap-2023 a.wav b.flac c.ogg --query "a dog barks" --top-k 2 --format json
  clapkit caption clapcap-2023 a.wav --beam-size 5
  clapkit zero-shot msclap-2023 a.wav --labels dog rain   # weights by name (clapkit pretrained)
"""
DISTRIBUTIONS = (
    "clapkit-core", "clapkit-audio-encoders", "clapkit-text-encoders", "clapkit-caption",
    "clapkit-datasets", "clapkit-training",
)  # fmt: skip


def versions() -> str:
    """The installed clapkit distributions and torch, one line."""
    found = []
    for dist in DISTRIBUTIONS:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return f"clapkit {', '.join(found)}; torch {torch.__version__}"


def _common(parser: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    parser.add_argument("--format", choices=formats, default=formats[0], help="output format")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no messages")


def _inference_options(parser: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    parser.add_argument("--long-audio", choices=("mean", "center"), default="mean")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps")
    _common(parser, formats)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``clapkit`` command."""
    parser = argparse.ArgumentParser(
        prog="clapkit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=versions())
    commands = parser.add_subparsers(dest="command", required=True)
    table_formats = ("table", "csv", "json")

    embed = commands.add_parser("embed", help="audio files (or texts) -> embeddings file")
    embed.add_argument("model", help="clapkit model folder or hub id")
    embed.add_argument("inputs", nargs="+", help="audio files, or texts with --text")
    embed.add_argument("-o", "--output", required=True, type=Path, help=".safetensors or .npy")
    embed.add_argument("--text", action="store_true", help="the inputs are texts")
    embed.add_argument("--no-normalize", action="store_true", help="keep unnormalised vectors")
    _inference_options(embed, ("text", "json"))

    zero_shot = commands.add_parser("zero-shot", help="classify audio files with text labels")
    zero_shot.add_argument("model", help="clapkit model folder or hub id")
    zero_shot.add_argument("inputs", nargs="+", help="audio files")
    zero_shot.add_argument("--labels", nargs="+", required=True, help="class names")
    zero_shot.add_argument(
        "--template", action="append", help="prompt with {} (repeat to ensemble several)"
    )
    zero_shot.add_argument("--multilabel", action="store_true", help="sigmoid per class")
    zero_shot.add_argument(
        "--top-k", type=int, help="labels shown per file (default: 3 in a table, all otherwise)"
    )
    _inference_options(zero_shot, table_formats)

    retrieve = commands.add_parser("retrieve", help="rank audio files for text queries")
    retrieve.add_argument("model", help="clapkit model folder or hub id")
    retrieve.add_argument("inputs", nargs="+", help="audio files to search")
    retrieve.add_argument("-q", "--query", nargs="+", required=True, help="text queries")
    retrieve.add_argument("--top-k", type=int, default=5, help="files shown per query")
    _inference_options(retrieve, table_formats)

    caption = commands.add_parser("caption", help="caption audio files (needs clapkit-caption)")
    caption.add_argument("model", help="ClapCaptioner folder or hub id")
    caption.add_argument("inputs", nargs="+", help="audio files")
    caption.add_argument("--strategy", choices=("beam", "greedy"), default="beam")
    caption.add_argument("--beam-size", type=int, default=5)
    caption.add_argument("--max-new-tokens", type=int, default=67)
    _inference_options(caption, table_formats)

    push = commands.add_parser("push", help="upload a saved model folder with a model card")
    push.add_argument("folder", type=Path, help="a save_pretrained folder")
    push.add_argument("repo_id", help="hub repository, org/name (created when missing)")
    push.add_argument("--metrics", type=Path, help="evaluate.py's metrics.json for the card")
    push.add_argument("--license", default="mit", help="the weights' licence id")
    push.add_argument("--dataset", action="append", default=[], help="training data (repeat)")
    push.add_argument("--description", default="A CLAP model trained with clapkit.")
    push.add_argument("--private", action="store_true")
    _common(push, ("text", "json"))

    pretrained = commands.add_parser("pretrained", help="list the weights loadable by name")
    pretrained.add_argument("--kind", choices=("clap", "captioner", "audio-encoder"))
    _common(pretrained, ("table", "json"))

    convert = commands.add_parser(
        "convert", help="msclap / LAION / transformers -> clapkit (or transformers) folder"
    )
    convert.add_argument("source", choices=("msclap", "laion", "transformers", "clapkit"))
    convert.add_argument("checkpoint", help="checkpoint file, transformers or clapkit folder")
    convert.add_argument("output", type=Path, help="folder to write")
    convert.add_argument(
        "--to",
        choices=("clapkit", "transformers"),
        default="clapkit",
        help="write a clapkit folder, or a transformers ClapModel folder (HTSAT + RoBERTa)",
    )
    convert.add_argument("--version", default="2023", help="msclap: 2022 or 2023")
    convert.add_argument("--audio", default="htsat-tiny", help="LAION audio encoder")
    convert.add_argument("--text-encoder", default="roberta", help="LAION text encoder")
    convert.add_argument("--tokenizer", help="tokenizer hub id or folder")
    _common(convert, ("text", "json"))
    return parser


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's and transformers' progress bars off inside (``--quiet``), then as
    they were."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if show or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()  # transformers reads this when it is first imported
    loaded = sys.modules.get("transformers")
    loaded_shown = loaded is not None and loaded.utils.logging.is_progress_bar_enabled()
    if loaded is not None and loaded_shown:
        loaded.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        enable_progress_bars()
        transformers = sys.modules.get("transformers")
        if transformers is not None and (loaded is None or loaded_shown):
            transformers.utils.logging.enable_progress_bar()


def _say(args: argparse.Namespace, message: str, record: dict[str, Any]) -> None:
    """The result of a file-writing command: a line on stderr, or JSON on stdout."""
    if args.format == "json":
        print(json.dumps(record, indent=2))
    elif not args.quiet:
        print(message, file=sys.stderr)


def _load(args: argparse.Namespace) -> ClapModel:
    device = check_device(args.device)
    return ClapModel.from_pretrained(args.model).to(device)


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
            metadata_ = {"inputs": json.dumps(args.inputs)}
            save_file({"embeddings": embeds.contiguous()}, partial, metadata=metadata_)
        os.replace(partial, args.output)
    finally:
        partial.unlink(missing_ok=True)
    record = {"output": str(args.output), "shape": list(embeds.shape), "inputs": args.inputs}
    _say(args, f"wrote {tuple(embeds.shape)} embeddings to {args.output}", record)


def _zero_shot(args: argparse.Namespace) -> None:
    model = _load(args)
    probs = model.zero_shot(
        [Path(p) for p in args.inputs],
        args.labels,
        template=args.template or ["this is a sound of {}"],
        multilabel=args.multilabel,
        batch_size=args.batch_size,
        long_audio=args.long_audio,
        progress=False if args.quiet else None,
    ).cpu()
    top_k = args.top_k if args.top_k is not None else (3 if args.format == "table" else None)
    kind = "sigmoid" if args.multilabel else "softmax"
    write_scores(args.inputs, args.labels, probs, top_k=top_k, fmt=args.format, kind=kind)


def _retrieve(args: argparse.Namespace) -> None:
    model = _load(args)
    hits = model.retrieve(
        args.query,
        [Path(p) for p in args.inputs],
        k=max(1, args.top_k),
        batch_size=args.batch_size,
        long_audio=args.long_audio,
        progress=False if args.quiet else None,
    )
    write_hits(args.query, args.inputs, hits.scores.cpu(), hits.indices.cpu(), fmt=args.format)


def _caption(args: argparse.Namespace) -> None:
    device = check_device(args.device)
    try:  # clapkit-caption sits above core: found by name, never imported statically
        caption_lib = importlib.import_module("clapkit.caption")
    except ModuleNotFoundError as error:
        raise ImportError(
            "clapkit caption needs clapkit-caption: pip install clapkit-caption"
        ) from error
    captioner = caption_lib.ClapCaptioner.from_pretrained(args.model).to(device)
    captions = captioner.generate(
        [Path(p) for p in args.inputs],
        strategy=args.strategy,
        beam_size=args.beam_size,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        long_audio=args.long_audio,
    )
    write_captions(args.inputs, captions, fmt=args.format)


def _convert(args: argparse.Namespace) -> None:
    tokenizer = args.tokenizer
    if args.source == "msclap":
        model = ClapModel.from_msclap(args.checkpoint, version=args.version, tokenizer=tokenizer)
    elif args.source == "laion":
        model = ClapModel.from_laion(
            args.checkpoint, audio=args.audio, text=args.text_encoder, tokenizer=tokenizer
        )
    elif args.source == "transformers":
        model = ClapModel.from_transformers(args.checkpoint, tokenizer=tokenizer)
    else:
        model = ClapModel.from_pretrained(args.checkpoint)
    if args.to == "transformers":
        model.to_transformers(args.output)
    else:
        model.save_pretrained(args.output)
    record = {"output": str(args.output), "source": args.source, "checkpoint": args.checkpoint,
              "to": args.to}  # fmt: skip
    _say(args, f"wrote {args.to} model to {args.output}", record)


def _push(args: argparse.Namespace) -> None:
    card = model_card(
        model_name=args.repo_id.split("/")[-1],
        description=args.description,
        license=args.license,
        datasets=args.dataset,
        metrics=args.metrics,
    )
    url = push_folder_to_hub(args.folder, args.repo_id, card=card, private=args.private)
    record = {"repo_id": args.repo_id, "commit": url, "folder": str(args.folder)}
    _say(args, f"uploaded {args.folder} to {args.repo_id}: {url}", record)


def _pretrained(args: argparse.Namespace) -> None:
    if args.format == "json":
        rows = [
            dataclasses.asdict(row) | {"source": row.source} for row in list_pretrained(args.kind)
        ]
        print(json.dumps(rows, indent=2))
    else:
        print(pretrained_table(args.kind))


HANDLERS = {
    "embed": _embed,
    "zero-shot": _zero_shot,
    "retrieve": _retrieve,
    "caption": _caption,
    "convert": _convert,
    "pretrained": _pretrained,
    "push": _push,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``clapkit`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0 on success, also when the reader of stdout closes the pipe; errors,
        a missing device included, print one line and return 1).
    """
    args = build_parser().parse_args(argv)
    try:
        with _progress_bars(show=not args.quiet):
            HANDLERS[args.command](args)
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
