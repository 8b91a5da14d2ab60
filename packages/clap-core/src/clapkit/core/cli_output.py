"""What the ``clapkit`` command prints: tables, CSV and JSON of scores, hits and captions.

Every writer prints to stdout in one of three formats: ``table`` (aligned, for people), ``csv``
(a header line, one row per result) and ``json`` (a list of records, indented).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["write_captions", "write_hits", "write_scores"]


def _write_table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    """CSV rows under a header, or the same columns aligned."""
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(rows)
        return
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    for row in cells:
        print("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]))


def write_scores(
    files: Sequence[str],
    labels: Sequence[str],
    probs: Tensor,
    *,
    top_k: int | None,
    fmt: str,
    kind: str,
) -> None:
    """Zero-shot scores: the ``top_k`` labels of each file, best first.

    ``json``: ``[{"file": ..., LABEL: score, ...}]`` (labels best first); ``csv``: ``file,
    rank, label, score`` rows; ``table``: a file a line, ``label:score`` pairs.

    Args:
        files: the audio files, in order.
        labels: the class names.
        probs: scores. Shape ``[n, c]``.
        top_k: labels kept per file (``None``: all).
        fmt: ``"table"``, ``"csv"`` or ``"json"``.
        kind: ``"softmax"`` or ``"sigmoid"`` (said in the table's header).
    """
    k = len(labels) if top_k is None else max(1, min(top_k, len(labels)))
    top = probs.topk(k, dim=-1)
    ranked = [
        [(labels[i], float(p)) for p, i in zip(values.tolist(), indices.tolist(), strict=True)]
        for values, indices in zip(top.values, top.indices, strict=True)
    ]
    if fmt == "json":
        records = [{"file": f} | dict(pairs) for f, pairs in zip(files, ranked, strict=True)]
        print(json.dumps(records, indent=2))
    elif fmt == "csv":
        rows = [
            [f, rank, label, f"{p:.6f}"]
            for f, pairs in zip(files, ranked, strict=True)
            for rank, (label, p) in enumerate(pairs, 1)
        ]
        _write_table(["file", "rank", "label", "score"], rows, fmt)
    else:
        rows = [
            [f, "  ".join(f"{lb}:{p:.4f}" for lb, p in pairs)]
            for f, pairs in zip(files, ranked, strict=True)
        ]
        _write_table(["file", f"top-{k} ({kind})"], rows, fmt)


def write_hits(
    queries: Sequence[str], files: Sequence[str], scores: Tensor, indices: Tensor, *, fmt: str
) -> None:
    """Retrieval hits: for each query its best files, best first, with cosine similarities.

    ``json``: ``[{"query": ..., "hits": [{"rank", "file", "score"}]}]``; ``csv`` and ``table``:
    ``query, rank, file, score`` rows.

    Args:
        queries: the text queries.
        files: the searched audio files.
        scores: cosine similarities. Shape ``[q, k]``.
        indices: indices into ``files``. Shape ``[q, k]``.
        fmt: ``"table"``, ``"csv"`` or ``"json"``.
    """
    hits = [
        [
            (rank, files[i], float(s))
            for rank, (s, i) in enumerate(zip(row_s.tolist(), row_i.tolist(), strict=True), 1)
        ]
        for row_s, row_i in zip(scores, indices, strict=True)
    ]
    if fmt == "json":
        records = [
            {"query": q, "hits": [{"rank": r, "file": f, "score": s} for r, f, s in found]}
            for q, found in zip(queries, hits, strict=True)
        ]
        print(json.dumps(records, indent=2))
        return
    rows = [
        [q, r, f, f"{s:.4f}"] for q, found in zip(queries, hits, strict=True) for r, f, s in found
    ]
    _write_table(["query", "rank", "file", "score"], rows, fmt)


def write_captions(files: Sequence[str], captions: Sequence[str], *, fmt: str) -> None:
    """One caption per file: ``json`` ``[{"file", "caption"}]``, ``csv`` or a table.

    Args:
        files: the audio files.
        captions: their captions, in order.
        fmt: ``"table"``, ``"csv"`` or ``"json"``.
    """
    if fmt == "json":
        records = [{"file": f, "caption": c} for f, c in zip(files, captions, strict=True)]
        print(json.dumps(records, indent=2))
        return
    _write_table(["file", "caption"], list(zip(files, captions, strict=True)), fmt)
