"""PTB tokenisation of captions, as the COCO caption tools do it.

pycocoevalcap scores captions after Stanford CoreNLP's ``PTBTokenizer`` (``-preserveLines
-lowerCase``), then drops a fixed list of punctuation tokens. Two backends give those tokens:

- ``"java"``: the Stanford jar itself (``stanford-corenlp-3.4.1.jar``, shipped inside the
  ``pycocoevalcap`` package or named by ``$CLAPKIT_PTB_JAR``), one process for a whole corpus.
  The numbers are then the COCO tools' numbers by construction.
- ``"python"``: a scanner written here that follows the Stanford tokenizer's rules for English
  captions: quotes turned into ````` / ``''`` by position, clitics split (``can't`` -> ``ca n't``,
  ``cannot`` -> ``can not``, ``he'd've`` -> ``he 'd 've``, ``gonna`` -> ``gon na``), brackets
  escaped (``-lrb-``), dashes normalised to ``--``, ``…`` to ``...``, runs of ``!``/``?`` kept as
  one token, abbreviations (``mr.``, ``u.s.``, ``a.m.``) kept whole with an extra ``.`` when they
  end a caption, numbers (``1,000``, ``3.5``, ``10:30``), hyphenated and slashed words kept whole.
  It is checked token for token against the jar on a corpus of punctuation-heavy captions
  (``tests/test_ptb.py``); rarer constructs (URLs, e-mail addresses, emoticons other than the
  common ones, SGML) may split differently.

``"auto"`` (the default everywhere) uses Java when both ``java`` and the jar are found, else
Python.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from clapkit.caption.metrics.java_tools import JavaToolMissingError, find_jar

Backend = Literal["auto", "java", "python"]

#: Tokens pycocoevalcap removes after PTB tokenisation (its list, upper-case escapes included:
#: with ``-lowerCase`` the jar writes ``-lrb-``, which the list does not catch, so it stays).
COCO_PUNCTUATION = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-"}
    | {"--", "...", ";"}
)

# Abbreviations the Stanford lexer keeps with their period (the common ones in captions).
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "ft", "vs", "etc", "inc", "ltd"}
    | {"co", "corp", "gen", "col", "sgt", "capt", "lt", "rev", "gov", "sen", "rep", "jan"}
    | {"feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "no"}
)
_BRACKETS = {
    "(": "-LRB-",
    ")": "-RRB-",
    "[": "-LSB-",
    "]": "-RSB-",
    "{": "-LCB-",
    "}": "-RCB-",
}
_SPLIT_WORDS = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "gotta": ("got", "ta"),
    "wanna": ("wan", "na"),
    "lemme": ("lem", "me"),
    "gimme": ("gim", "me"),
    "'tis": ("'t", "is"),
    "'twas": ("'t", "was"),
}
_KEPT_APOSTROPHE_WORDS = re.compile(r"(?i)'(?:cause|em|n|\d0s|\d\ds)$")
_CLITIC = re.compile(r"(?i)(n't|'s|'re|'ve|'ll|'d|'m)$")

_APOSTROPHES = "'\u2019"
_WORD_CHAR = r"[^\W_]"
# One scanner rule per token class; at each position the longest match wins (as in JFlex),
# ties going to the earlier rule.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("abbreviation", re.compile(rf"(?:{_WORD_CHAR}\.){{2,}}|{_WORD_CHAR}+\.(?=\s|$)")),
    ("acronym", re.compile(rf"(?:{_WORD_CHAR}\.)+{_WORD_CHAR}(?!{_WORD_CHAR})")),
    ("number", re.compile(r"[+-]?\d+(?:[,.:]\d+)+")),
    ("smiley", re.compile(r"[:;]-?[()DPp](?![\w])")),
    ("hashtag", re.compile(rf"[#@]{_WORD_CHAR}+")),
    ("number_word", re.compile(rf"\d+(?:[,.]\d+)+(?:-{_WORD_CHAR}+)+")),
    ("dotted", re.compile(r"[^\W\d_]+(?:\.[^\W\d_]+)+(?![\w.])")),
    (
        "slashed",
        re.compile(rf"{_WORD_CHAR}+(?:-{_WORD_CHAR}+)*(?:/{_WORD_CHAR}+(?:-{_WORD_CHAR}+)*)+"),
    ),
    (
        "word",
        re.compile(
            rf"[{_APOSTROPHES}]?{_WORD_CHAR}+(?:[{_APOSTROPHES}]{_WORD_CHAR}+)*"
            rf"(?:-{_WORD_CHAR}+(?:[{_APOSTROPHES}]{_WORD_CHAR}+)*)*"
        ),
    ),
    ("ellipsis", re.compile(r"\.\.\.+|\u2026|\. \. \.")),
    ("dash", re.compile(r"--+|\u2014|\u2013")),
    ("double_quote", re.compile(r"``|''|\"|\u201c|\u201d")),
    ("single_quote", re.compile(r"[`'\u2018\u2019]")),
    ("exclamation", re.compile(r"[!?]+")),
    ("symbol", re.compile(r"\S")),
]


def _split_word(word: str) -> list[str]:
    """Clitics and fused words of one scanned word, PTB style."""
    plain = word.replace("\u2019", "'")
    lower = plain.lower()
    if lower in _SPLIT_WORDS:
        first, _ = _SPLIT_WORDS[lower]
        return [plain[: len(first)], plain[len(first) :]]
    if lower == "y'all":
        return [plain[:2], plain[2:]]
    if "'n'" in lower[1:-1]:  # rock'n'roll
        head, _, tail = plain.partition("'n'")
        return [head, "'n'", tail]
    if (
        _KEPT_APOSTROPHE_WORDS.match(lower)
        or _CLITIC.fullmatch(lower)  # "I 'm": the clitic stands alone already
        or lower.startswith("d'")
        or "o'clock" in lower
    ):
        return [plain]
    if plain.startswith("'"):  # an opening single quote glued to the word
        return ["`", *_split_word(plain[1:])]
    clitics: list[str] = []
    rest = plain
    while (match := _CLITIC.search(rest)) is not None and match.start() > 0:
        clitics.insert(0, match.group(1))
        rest = rest[: match.start()]
    return [rest, *clitics]


def _scan(line: str) -> list[tuple[str, str, int]]:
    """(rule, text, start) of every raw token of one line, longest match first."""
    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(line):
        if line[position].isspace():
            position += 1
            continue
        best: tuple[str, str] | None = None
        for name, pattern in _RULES:
            match = pattern.match(line, position)
            if match and match.end() > position and (best is None or len(match[0]) > len(best[1])):
                best = (name, match[0])
        assert best is not None  # "symbol" matches any non-space character
        tokens.append((best[0], best[1], position))
        position += len(best[1])
    return tokens


def _is_abbreviation(stem: str) -> bool:
    letters = stem.replace(".", "")
    if "." in stem:  # u.s. / e.g. / a.m.
        return letters.isalpha()
    return (len(stem) == 1 and stem.isalpha()) or stem.lower() in _ABBREVIATIONS


def _ptb_tokens(line: str) -> list[str]:
    """PTB tokens of one line, before lowercasing and punctuation removal."""
    scanned = _scan(line)
    out: list[str] = []
    for index, (rule, text, start) in enumerate(scanned):
        before = line[start - 1] if start > 0 else " "
        end = start + len(text)
        after = line[end] if end < len(line) else " "
        if rule == "word":
            out.extend(_split_word(text))
        elif rule == "abbreviation":
            if _is_abbreviation(text[:-1]):
                out.append(text)
                if index == len(scanned) - 1:  # a caption ending in "a.m." gets its own period
                    out.append(".")
            else:  # a sentence-final period after an ordinary word or number
                out.extend([*_ptb_tokens(text[:-1]), "."])
        elif rule == "ellipsis":
            out.append("...")
        elif rule == "dash":
            out.append("--")
        elif rule == "double_quote":
            if text in ("``", "\u201c"):
                out.append("``")
            elif text in ("''", "\u201d"):
                out.append("''")
            else:  # ASCII '"': opening after a space or an opening bracket, else closing
                out.append("``" if before.isspace() or before in "([{" else "''")
        elif rule == "single_quote":
            if text in ("`", "\u2018"):
                out.append("`")
            elif text == "\u2019":
                out.append("'")
            else:
                opening = (before.isspace() or before in "([{") and not after.isspace()
                out.append("`" if opening else "'")
        elif rule == "smiley":
            out.append("".join(_BRACKETS.get(c, c) for c in text))
        else:
            out.append(_BRACKETS.get(text, text))
    return out


# pycocoevalcap's flags: one output line per caption, lowercased
_JAVA_FLAGS = ("-preserveLines", "-lowerCase")


def _java_lines(lines: Sequence[str], jar: Path) -> list[list[str]]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines))
        name = f.name
    try:
        result = subprocess.run(
            ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", *_JAVA_FLAGS, name],
            capture_output=True,
            check=False,
            text=True,
            encoding="utf-8",
        )
    finally:
        Path(name).unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer ({jar}) failed: {result.stderr.strip()[-2000:]}")
    output = result.stdout.split("\n")
    if len(output) < len(lines):
        raise RuntimeError(
            f"the PTB tokenizer ({jar}) returned {len(output)} lines for {len(lines)} captions"
        )
    return [line.split() for line in output[: len(lines)]]


def ptb_tokenize(
    captions: Sequence[str], *, backend: Backend = "auto", jar: str | Path | None = None
) -> list[list[str]]:
    """Tokens of each caption as the COCO caption tools score them.

    Lowercased PTB tokens with :data:`COCO_PUNCTUATION` removed; a newline inside a caption counts
    as a space (as pycocoevalcap does).

    Args:
        captions: The captions.
        backend: ``"java"`` (Stanford's jar, exact), ``"python"`` (this module's scanner) or
            ``"auto"`` (Java when ``java`` and the jar are found, else Python).
        jar: The Stanford CoreNLP jar; else ``$CLAPKIT_PTB_JAR``, else pycocoevalcap's copy.

    Returns:
        One token list per caption, e.g. ``'A man says "hello" twice.'`` ->
        ``["a", "man", "says", "hello", "twice"]``.

    Raises:
        JavaToolMissingError: With ``backend="java"`` when ``java`` or the jar is missing.
        ValueError: On an unknown backend.
    """
    if backend not in ("auto", "java", "python"):
        raise ValueError(f"unknown PTB backend {backend!r}; use 'auto', 'java' or 'python'")
    lines = [" ".join(caption.split()) for caption in captions]
    found: Path | None = None
    if backend != "python":
        try:
            found = find_jar("ptb", jar)
        except JavaToolMissingError:
            if backend == "java":
                raise
    if found is not None and lines:
        tokenized = _java_lines(lines, found)
    else:
        tokenized = [[t.lower() for t in _ptb_tokens(line)] for line in lines]
    return [[t for t in tokens if t not in COCO_PUNCTUATION] for tokens in tokenized]
