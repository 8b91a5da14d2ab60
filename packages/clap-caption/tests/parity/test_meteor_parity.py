"""METEOR through clapkit's stdio driver of ``meteor-1.5.jar`` against pycocoevalcap's ``Meteor``.

Needs Java and pycocoevalcap (which ships the jar), both present in ``nox -s parity``.
"""

from __future__ import annotations

import pytest

from clapkit.caption.metrics import evaluate_captions, ptb_tokenize

pytestmark = pytest.mark.parity

PREDICTIONS = [
    "a cat sits on the mat",
    "a dog barks while cars pass by",
    "rain falls on a tin roof",
    "someone speaks over loud music",
]
REFERENCES = [
    ["a cat is sitting on the mat", "the cat sits on a mat", "a cat rests on a rug"],
    ["a dog is barking and a car drives past", "dogs bark near traffic", "a dog barks"],
    ["heavy rain hits a metal roof", "rain is falling on a roof", "rain on tin"],
    ["a man talks while music plays loudly", "speech over music", "a person speaks"],
]


def test_meteor_equals_pycocoevalcaps() -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    res = {i: [" ".join(t)] for i, t in enumerate(ptb_tokenize(PREDICTIONS, backend="java"))}
    gts = {
        i: [" ".join(t) for t in ptb_tokenize(refs, backend="java")]
        for i, refs in enumerate(REFERENCES)
    }
    expected, expected_items = Meteor().compute_score(gts, res)
    scores = evaluate_captions(PREDICTIONS, REFERENCES, metrics=["meteor"], java="require")
    assert scores.corpus["meteor"] == pytest.approx(expected, abs=1e-6)
    assert scores.per_item["meteor"] == pytest.approx(list(expected_items), abs=1e-6)
    assert 0.2 < scores.corpus["meteor"] < 1.0
