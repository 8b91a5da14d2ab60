"""clapkit's PTB tokenisation and BLEU/ROUGE-L/CIDEr-D against pycocoevalcap on raw captions.

Needs Java and pycocoevalcap (installed by ``nox -s parity``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clapkit.caption.metrics import ptb_tokenize
from clapkit.caption.metrics.evaluate import evaluate_captions

pytestmark = pytest.mark.parity
CORPUS = [
    json.loads(line)["caption"]
    for line in (Path(__file__).parents[1] / "data" / "ptb_captions.jsonl").read_text().splitlines()
]


def _coco_tokens(captions: list[str]) -> list[list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [out[i][0].split() for i in range(len(captions))]


@pytest.mark.parametrize("backend", ["java", "python"])
def test_tokens_equal_pycocoevalcaps(backend: str) -> None:
    assert ptb_tokenize(CORPUS, backend=backend) == _coco_tokens(CORPUS)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["java", "python"])
def test_scores_on_raw_captions_equal_pycocoevalcaps(backend: str) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    predictions = CORPUS[0::3]
    references = [
        [CORPUS[(3 * i + k) % len(CORPUS)] for k in (1, 2, 4, 5, 7)]
        for i in range(len(predictions))
    ]
    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    gts = tokenizer.tokenize(
        {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    )
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    ours = evaluate_captions(
        predictions, references, metrics=["bleu", "rouge_l", "cider_d"], java="skip",
        ptb=backend,  # type: ignore[arg-type]
    ).corpus  # fmt: skip
    for n in range(4):
        assert ours[f"bleu_{n + 1}"] == pytest.approx(bleu[n], rel=1e-9, abs=1e-12)
    assert ours["rouge_l"] == pytest.approx(rouge, rel=1e-9)
    assert ours["cider_d"] == pytest.approx(cider, rel=1e-9)
