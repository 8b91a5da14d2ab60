"""Where shards are: specs in webdataset's notation, named sources with mixing weights.

A *spec* is anything ``webdataset`` opens, plus two local conveniences:

- a folder (its ``*.tar``, sorted) or a glob pattern (``data/wavcaps/*.tar``);
- brace ranges and lists (``train-{000000..000999}.tar``, ``{a,b}.tar``), several specs joined
  by ``::``, ``pipe:`` commands (``pipe:curl -s https://host/x-{0..9}.tar``,
  ``pipe:aws s3 cp s3://bucket/x.tar -``) and URLs (``https://...``), expanded by webdataset.

Several *sources* are mixed by weight (the paper mixes 20 of very different sizes): give entries
``NAME=SPEC:WEIGHT`` (``:WEIGHT`` optional, default 1), or a YAML or JSON file::

    sources:
      - {name: wavcaps, shards: "wavcaps/train-{000000..000199}.tar", weight: 4}
      - {name: clotho, shards: "pipe:cat clotho/*.tar", weight: 1}

Relative local paths in such a file are taken from the file's folder.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ShardSource", "ShardSpec", "parse_sources", "resolve_shards"]

ShardSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""A spec, a sources file, or a list of specs / ``NAME=SPEC:WEIGHT`` entries / shard paths."""

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
"""The start of a URL or ``pipe:`` (anything else is a local path)."""
_NAMED = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")
SOURCES_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class ShardSource:
    """One source of samples: its name, its shard URLs, and its share of a mix.

    Attributes:
        name: How logs and skip reports name it.
        urls: Its shards, expanded (local paths or anything ``webdataset.gopen`` opens).
        weight: Relative probability that the next sample of a mix comes from it.
    """

    name: str
    urls: tuple[str, ...]
    weight: float = 1.0


def resolve_shards(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The shard URLs of one spec (see the module's docstring), in order.

    Args:
        spec: A folder, glob, brace pattern, ``::``-joined specs, ``pipe:`` command or URL; or a
            list of such.

    Returns:
        The URLs; local paths as given (no scheme).

    Raises:
        FileNotFoundError: A local spec matches no file (named).
    """
    from webdataset.shardlists import expand_urls

    if not isinstance(spec, (str, os.PathLike)):
        return [url for part in spec for url in resolve_shards(part)]
    text = os.fspath(spec)
    urls: list[str] = []
    for url in expand_urls(text):
        if SCHEME.match(url) and not re.match(r"^[A-Za-z]:[\\/]", url):  # pipe:, https:, ...
            urls.append(url)
        elif Path(url).is_dir():
            urls += [str(p) for p in sorted(Path(url).glob("*.tar"))]
        elif glob.has_magic(url):
            urls += sorted(glob.glob(url))
        elif Path(url).is_file():
            urls.append(url)
        else:
            raise FileNotFoundError(f"no shard found for {url!r} (from {text!r})")
    if not urls:
        raise FileNotFoundError(f"no shard found for {text!r}")
    return urls


def _entry(text: str, index: int) -> ShardSource:
    """``NAME=SPEC[:WEIGHT]`` or a bare spec (named ``source<index>``)."""
    named = _NAMED.match(text)
    name, spec = (named.group(1), named.group(2)) if named else (f"source{index}", text)
    weight = 1.0
    head, colon, tail = spec.rpartition(":")
    if colon and head and re.fullmatch(r"[0-9]*\.?[0-9]+(e-?[0-9]+)?", tail):
        spec, weight = head, float(tail)
    return ShardSource(name, tuple(resolve_shards(spec)), weight)


def _from_file(path: Path) -> list[ShardSource]:
    """The ``sources`` list of a YAML or JSON file (read as data only: nothing in it runs)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        document: Any = json.loads(text)
    else:
        import yaml  # type: ignore[import-untyped]

        document = yaml.safe_load(text)
    items = document.get("sources") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty list under 'sources'")
    sources = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "shards" not in item:
            raise ValueError(f"{path}: source {index} needs 'shards' (and 'name', 'weight')")
        shards = item["shards"]
        specs = [shards] if isinstance(shards, str) else list(shards)
        local = [
            s if SCHEME.match(s) or Path(s).is_absolute() else str(path.parent / s) for s in specs
        ]
        sources.append(
            ShardSource(
                str(item.get("name", f"source{index}")),
                tuple(resolve_shards(local)),
                float(item.get("weight", 1.0)),
            )
        )
    return sources


def parse_sources(spec: ShardSpec) -> list[ShardSource]:
    """The sources a run reads: one spec, a sources file, or several entries.

    Args:
        spec: A spec or a YAML/JSON sources file (a string or path), or a list whose items are
            ``NAME=SPEC[:WEIGHT]`` entries (several sources) or specs (one source).

    Returns:
        The sources, in order.

    Raises:
        FileNotFoundError: A local spec matches nothing.
        ValueError: A sources file without ``sources``, a weight that is not positive, or two
            sources of the same name.
    """
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.suffix.lower() in SOURCES_SUFFIXES and path.is_file():
            sources = _from_file(path)
        else:
            sources = [_entry(os.fspath(spec), 0)]
    else:
        entries = [os.fspath(s) for s in spec]
        if any(_NAMED.match(e) for e in entries):
            sources = [_entry(e, i) for i, e in enumerate(entries)]
        else:
            sources = [ShardSource("source0", tuple(resolve_shards(entries)))]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"two sources share a name: {names}")
    for source in sources:
        if not source.weight > 0:
            raise ValueError(f"source {source.name!r}: weight must be > 0, got {source.weight}")
    return sources
