"""PTB tokenisation of captions: the Python scanner against the Stanford tokenizer's output.

``data/ptb_captions.jsonl`` holds punctuation-heavy captions with the tokens that Stanford
CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` (the jar pycocoevalcap runs) printed
for them (``ptb``) and what remains after pycocoevalcap's punctuation filter (``coco``). The
parity suite (``tests/parity/test_ptb_parity.py``) runs the jar itself through pycocoevalcap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clapkit.caption.metrics import COCO_PUNCTUATION, JavaToolMissingError, ptb_tokenize, tokenize
from clapkit.caption.metrics.evaluate import evaluate_captions

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "ptb_captions.jsonl").read_text().splitlines()
]


def test_the_corpus_is_punctuation_heavy() -> None:
    assert len(CORPUS) >= 130
    captions = " ".join(item["caption"] for item in CORPUS)
    for mark in [
        '"',
        "'",
        "\u2019",
        "\u201c",
        "(",
        "[",
        "{",
        "...",
        "\u2026",
        "--",
        "\u2014",
        "!!",
    ]:
        assert mark in captions, mark


def test_python_backend_gives_the_stanford_tokens_that_are_scored() -> None:
    tokens = ptb_tokenize([item["caption"] for item in CORPUS], backend="python")
    mismatches = [
        (item["caption"], got, item["coco"])
        for item, got in zip(CORPUS, tokens, strict=True)
        if got != item["coco"]
    ]
    assert mismatches == []


def test_the_issue_examples() -> None:
    assert tokenize('A man says "hello" twice.') == tokenize("A man says hello twice.")
    assert tokenize("You cannot hear it") == ["you", "can", "not", "hear", "it"]
    assert tokenize("It\u2019s loud") == ["it", "'s", "loud"]
    assert tokenize("Barking!!") == ["barking", "!!"]  # "!!" is not in the COCO filter list
    assert tokenize("A voice (muffled)") == ["a", "voice", "-lrb-", "muffled", "-rrb-"]


def test_punctuation_filter_is_pycocoevalcaps_list() -> None:
    assert {".", ",", "``", "''", "...", "--", ";", ":", "?", "!", "-LRB-"} <= COCO_PUNCTUATION
    assert "!!" not in COCO_PUNCTUATION
    assert "-lrb-" not in COCO_PUNCTUATION


def test_quotes_no_longer_break_bleu() -> None:
    scores = evaluate_captions(
        ['A man says "hello" twice.'],
        [["A man says hello twice."]],
        metrics=["bleu"],
        java="skip",
    )
    assert scores.corpus["bleu_4"] == pytest.approx(1.0, abs=1e-6)


def test_newlines_inside_a_caption_are_spaces() -> None:
    assert ptb_tokenize(["a dog\nbarks"], backend="python") == [["a", "dog", "barks"]]


def test_java_backend_names_the_missing_jar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "stanford-corenlp-3.4.1.jar"
    with pytest.raises(JavaToolMissingError, match=r"stanford-corenlp-3\.4\.1\.jar|Java runtime"):
        ptb_tokenize(["a dog"], backend="java", jar=missing)
    monkeypatch.setenv("CLAPKIT_PTB_JAR", str(missing))
    assert ptb_tokenize(["A dog."], backend="auto") == [["a", "dog"]]  # falls back to Python


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown PTB backend"):
        ptb_tokenize(["a"], backend="perl")  # type: ignore[arg-type]
