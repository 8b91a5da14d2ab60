"""Fixtures of the parity suite (helpers live in core_parity_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from core_parity_helpers import bert_vocab, clip_files, gpt2_dir, roberta_dir

__all__ = ["bert_vocab", "clip_files", "gpt2_dir", "roberta_dir"]
