"""Shared pieces of the parity suite: tokenizers that exist offline, clips, tolerances.

Run in an environment with the reference implementations (``nox -s parity``, or a venv with
the workspace packages plus ``tools/parity-references.txt`` installed ``--no-deps`` and
``tools/parity-deps.txt``) with ``HF_HUB_OFFLINE=1``. No weights are downloaded: every model is
built with random weights (randomised batch-norm statistics included) and written in the
official format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[4]
FSDD = REPO / "data" / "fsdd" / "recordings"
GPT2_FILES = REPO / "data" / "reference" / "tokenizers" / "gpt2"  # GPT-2's real vocab/merges
# no "!" (msclap pads GPT2 with "!") and no quotes (id 1 = RoBERTa's padding index below)
TEXTS = [
    "this is a sound of a dog barking",
    "a man speaks the digit seven",
    "rain falls on a tin roof while thunder rumbles far away and a car passes by slowly",
    "zero",
]
LABELS = ["dog barking", "the digit seven", "rain", "zero", "a siren"]
BERT_WORDS = sorted({w for t in [*TEXTS, *LABELS, "is the sound of"] for w in t.split()})


def rows_close(ours: torch.Tensor, reference: torch.Tensor, tol: float = 1e-5) -> float:
    """Each row within ``tol`` relative (L2 norm of the difference over the reference's).

    Returns:
        The largest relative row error (printed, so ``-s`` shows the measured figure).
    """
    ours, reference = ours.double().cpu(), reference.double().cpu()
    assert ours.shape == reference.shape
    error = ((ours - reference).norm(dim=-1) / reference.norm(dim=-1)).max().item()
    print(f"max relative row error {error:.3g} (tolerance {tol:g})")
    assert error <= tol, f"max relative row error {error:.3g} > {tol}"
    return error


def randomize_batchnorm(module: nn.Module, seed: int) -> None:
    """Give every batch norm non-trivial running statistics (as a trained model has)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 10 - 20)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 40 + 5)


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """GPT-2's real vocab.json + merges.txt, from the repository's data/reference."""
    return GPT2_FILES


def _checked(tokenizer: Any) -> Any:
    """Guard against a tokenizer that silently maps every word to one id."""
    ids = tokenizer(TEXTS[2])["input_ids"]
    assert len(set(ids)) > 10, f"{type(tokenizer).__name__} is broken: {ids}"
    return tokenizer


def gpt2_tokenizer(gpt2_dir: Path) -> Any:
    from transformers import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(str(gpt2_dir))
    return _checked(tokenizer)


@pytest.fixture(scope="session")
def roberta_dir(gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RoBERTa-style vocab (roberta-base's specials at ids 0-3) over GPT-2's byte BPE."""
    vocab = json.loads((gpt2_dir / "vocab.json").read_text())
    remapped = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token, _ in sorted(vocab.items(), key=lambda item: item[1]):
        remapped.setdefault(token, len(remapped))
    remapped["<mask>"] = len(remapped)
    folder = tmp_path_factory.mktemp("roberta")
    (folder / "vocab.json").write_text(json.dumps(remapped))
    shutil.copy(gpt2_dir / "merges.txt", folder / "merges.txt")
    return folder


def roberta_tokenizer(roberta_dir: Path) -> Any:
    from transformers import RobertaTokenizerFast

    tokenizer = RobertaTokenizerFast(
        vocab=str(roberta_dir / "vocab.json"), merges=str(roberta_dir / "merges.txt")
    )
    return _checked(tokenizer)


@pytest.fixture(scope="session")
def bert_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small WordPiece vocabulary covering the test texts (no offline bert vocab exists)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    tokens += [w for w in BERT_WORDS if w not in tokens]
    path = tmp_path_factory.mktemp("bert") / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return path


def bert_tokenizer(bert_vocab: Path) -> Any:
    from transformers import BertTokenizerFast

    return _checked(BertTokenizerFast(vocab=str(bert_vocab), do_lower_case=True))


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real FSDD clips of several lengths plus noise files (mono, 8 / 16 / 44.1 kHz)."""
    speech = sorted(FSDD.glob("*.flac"))
    assert speech, f"no FSDD clips under {FSDD}"
    lengths = {f: sf.info(f).frames for f in speech[:200]}
    by_length = sorted(lengths, key=lengths.get)  # type: ignore[arg-type]
    chosen = [by_length[0], by_length[len(by_length) // 2], by_length[-1], speech[1000]]
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for seconds, rate in ((1.3, 16000), (3.0, 44100), (4.9, 44100)):
        path = folder / f"noise_{seconds}s_{rate}.wav"
        sf.write(path, (0.3 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
        chosen.append(path)
    return chosen


def soundfile_load(path: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, int]:
    """Stand-in for ``torchaudio.load`` (which needs torchcodec in torchaudio >= 2.9)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate
