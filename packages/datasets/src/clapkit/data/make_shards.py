"""Command: pack a manifest or a folder of clips into tar shards.

``python -m clapkit.data.make_shards (--manifest M | --folder F) --output-dir D
[--samples-per-shard N] [--prefix P] [--resample-to HZ]``, also installed as
``clapkit-make-shards``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clapkit.data.manifest import read_manifest, records_from_folder
from clapkit.data.shard_writer import write_shards


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, write the shards, print what was written.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m clapkit.data.make_shards", description=__doc__.splitlines()[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="JSON Lines manifest")
    source.add_argument("--folder", help="folder of audio files with .json/.txt sidecars")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--prefix", default="shard")
    parser.add_argument(
        "--resample-to",
        type=int,
        default=None,
        metavar="HZ",
        help="decode every clip once and store it at this rate as 24-bit FLAC (the encoder's "
        "rate: training then decodes only crops and never resamples)",
    )
    args = parser.parse_args(argv)
    records = read_manifest(args.manifest) if args.manifest else records_from_folder(args.folder)
    shards = write_shards(
        records,
        args.output_dir,
        samples_per_shard=args.samples_per_shard,
        prefix=args.prefix,
        sample_rate=args.resample_to,
    )
    print(f"wrote {len(records)} clips into {len(shards)} shards under {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
