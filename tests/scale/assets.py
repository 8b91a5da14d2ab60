"""What the paper presets need, built offline: text towers and language models at their real
sizes with random weights, a CLAP folder, and small manifests of the shipped FSDD clips.

The text towers are transformers' base configurations (BERT base, RoBERTa base, CLIP ViT-B/32's
text model, GPT2 124M) saved with ``save_pretrained`` beside a tokenizer: GPT2's real tokenizer
files from ``data/reference/tokenizers/gpt2``, and for BERT, RoBERTa and CLIP a tokenizer of
the family trained on the test captions (``clapkit.text.corpus.train_tokenizer``). Their
vocabulary tables keep the real sizes, so every weight matrix has the paper model's shape.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import transformers

from clapkit.text.corpus import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
GPT2_TOKENIZER = ROOT / "data" / "reference" / "tokenizers" / "gpt2"
FSDD = ROOT / "data" / "fsdd"
CORPUS = [
    "a man says the digit zero", "a man says the digit one", "a woman says the digit two",
    "a dog barks in the rain", "this is a sound of a siren", "rain falls on a tin roof",
    "a speaker says a number", "which digit", "which speaker", "this is a sound of {}",
]  # fmt: skip

# registry name -> (transformers model class, config class)
TEXT_TOWERS = {
    "gpt2-eot": ("GPT2LMHeadModel", "GPT2Config"),
    "bert": ("BertModel", "BertConfig"),
    "roberta": ("RobertaModel", "RobertaConfig"),
    "clip": ("CLIPTextModelWithProjection", "CLIPTextConfig"),
}


@dataclass(frozen=True)
class Assets:
    """Paths of what the presets read."""

    text: dict[str, Path]
    clap: Path
    train: Path
    test: Path
    shards: Path
    multitask: Path
    labelled: Path


def gpt2_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """GPT-2's real tokenizer, from the vocabulary files in the repository."""
    return transformers.GPT2TokenizerFast(
        vocab_file=str(GPT2_TOKENIZER / "vocab.json"),
        merges_file=str(GPT2_TOKENIZER / "merges.txt"),
    )


def text_tower_folder(kind: str, folder: Path) -> Path:
    """A random-weight text model of ``kind`` at its base size and its tokenizer in ``folder``.

    GPT2 is saved with its language-model head (tied to the word embeddings), so the same folder
    serves the GPT2-EOT text tower and the captioner's and HTSAT-22's language model.
    """
    model_class, config_class = (getattr(transformers, n) for n in TEXT_TOWERS[kind])
    tokenizer = gpt2_tokenizer() if kind == "gpt2-eot" else train_tokenizer(kind, CORPUS)
    config = config_class()
    if kind == "gpt2-eot":
        config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    else:  # the trained tokenizer's special ids (CLIP pools at its end-of-text id)
        config.pad_token_id = tokenizer.pad_token_id
        if kind in ("roberta", "clip"):
            config.bos_token_id, config.eos_token_id = (
                tokenizer.bos_token_id,
                tokenizer.eos_token_id,
            )
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_fsdd(folder: Path) -> Path:
    """The shipped FSDD recordings' folder layout (``recordings/``) under ``folder``."""
    shutil.copytree(FSDD / "recordings", folder / "recordings")
    return folder


def write_lines(path: Path, lines: list[str]) -> Path:
    """``lines`` as a JSON Lines file."""
    path.write_text("".join(line + "\n" for line in lines))
    return path
