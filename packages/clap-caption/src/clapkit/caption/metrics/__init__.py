"""Captioning metrics: BLEU, ROUGE-L, CIDEr-D in Python; METEOR, SPICE, SPIDEr via Java."""

from clapkit.caption.metrics.evaluate import ALL_METRICS, CaptionScores, evaluate_captions
from clapkit.caption.metrics.java_tools import JavaToolMissingError, find_jar, meteor, spice
from clapkit.caption.metrics.ngram import bleu, cider_d, rouge_l
from clapkit.caption.metrics.ptb import COCO_PUNCTUATION, ptb_tokenize
from clapkit.caption.metrics.text import tokenize

__all__ = [
    "ALL_METRICS",
    "COCO_PUNCTUATION",
    "CaptionScores",
    "JavaToolMissingError",
    "bleu",
    "cider_d",
    "evaluate_captions",
    "find_jar",
    "meteor",
    "ptb_tokenize",
    "rouge_l",
    "spice",
    "tokenize",
]
