"""Captioning metrics on examples computed by hand from the COCO definitions."""

from __future__ import annotations

import math

import pytest

from clapkit.caption.metrics import (
    JavaToolMissingError,
    bleu,
    cider_d,
    evaluate_captions,
    find_jar,
    rouge_l,
    tokenize,
)

CAT = ["the", "cat", "sat", "on", "the", "mat"]
REFS = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]


def test_tokenize_lowercases_splits_clitics_and_drops_punctuation() -> None:
    assert tokenize("A dog's bark, then: silence.") == ["a", "dog", "'s", "bark", "then", "silence"]
    assert tokenize("Rain doesn't stop!") == ["rain", "does", "n't", "stop"]


def test_bleu_by_hand() -> None:
    # matches: unigrams 5/6, bigrams 3/5, trigrams 1/4, 4-grams 0/3; closest ref length 6 -> BP 1
    corpus, per_item = bleu([CAT], [REFS])
    assert corpus[0] == pytest.approx(5 / 6)
    assert corpus[1] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert corpus[2] == pytest.approx(0.5)
    assert corpus[3] < 1e-3
    assert per_item[0] == pytest.approx(corpus)


def test_bleu_brevity_penalty_by_hand() -> None:
    corpus, _ = bleu([["the", "cat"]], [[REFS[0]]])
    assert corpus[0] == pytest.approx(math.exp(1 - 6 / 2))


def test_bleu_sums_counts_over_the_corpus() -> None:
    corpus, _ = bleu([CAT, ["a", "dog"]], [REFS, [["a", "cat"]]])
    assert corpus[0] == pytest.approx((5 + 1) / (6 + 2))


def test_rouge_l_by_hand() -> None:
    # LCS with ref 1 = "the cat on the mat" (5): P = R = 5/6
    assert rouge_l([CAT], [REFS])[0] == pytest.approx(5 / 6)
    # P = 1, R = 2/3: F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    expected = 2.44 * (2 / 3) / (2 / 3 + 1.44)
    assert rouge_l([["a", "cat"]], [[["a", "cat", "sat"]]])[0] == pytest.approx(expected)
    assert rouge_l([["dog"]], [[["a", "cat"]]])[0] == 0.0


def test_cider_d_by_hand() -> None:
    # two items, every n-gram in one item's references only: idf = log 2 for all of them
    perfect, items = cider_d([["a", "b"], ["c", "d"]], [[["a", "b"]], [["c", "d"]]])
    assert items == pytest.approx([5.0, 5.0])  # orders 1 and 2 cosine 1, orders 3 and 4 empty
    # "c d e" vs "c d": unigram cosine 2/sqrt(6), bigram 1/sqrt(2), one bigram longer
    _, items = cider_d([["a", "b"], ["c", "d", "e"]], [[["a", "b"]], [["c", "d"]]])
    expected = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert items[1] == pytest.approx(expected)
    assert perfect == pytest.approx(5.0)
    assert cider_d([["x"], ["y"]], [[["a"]], [["b"]]])[0] == 0.0


def test_evaluate_captions_reports_missing_java_tools_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CLAPKIT_METEOR_JAR", str(tmp_path / "meteor-1.5.jar"))
    monkeypatch.setenv("CLAPKIT_SPICE_JAR", str(tmp_path / "spice-1.0.jar"))
    scores = evaluate_captions(
        ["The cat sat on the mat."], [["The cat is on the mat.", "There is a cat on the mat."]]
    )
    assert scores.corpus["bleu_1"] == pytest.approx(5 / 6)
    assert scores.corpus["rouge_l"] == pytest.approx(5 / 6)
    assert set(scores.missing) == {"meteor", "spice", "spider"}
    assert "meteor-1.5.jar" in scores.missing["meteor"]
    assert str(tmp_path) in scores.missing["meteor"]
    assert "SPICE" in scores.missing["spider"]
    with pytest.raises(JavaToolMissingError, match="CLAPKIT_SPICE_JAR"):
        evaluate_captions(["a"], [["a"]], metrics=["spice"], java="require")


def test_missing_java_runtime_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(JavaToolMissingError, match="Java runtime"):
        find_jar("meteor")


def test_five_reference_protocol_and_bad_input_are_checked() -> None:
    with pytest.raises(ValueError, match="item 1 has 4 references, the protocol needs 5"):
        evaluate_captions(["a", "b"], [["a"] * 5, ["b"] * 4], references_per_item=5, java="skip")
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        evaluate_captions(["a", "b"], [["a"]], java="skip")
    with pytest.raises(ValueError, match="item 0: references must be a non-empty list"):
        evaluate_captions(["a"], ["a"], java="skip")
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate_captions(["a"], [["a"]], metrics=["bertscore"])
