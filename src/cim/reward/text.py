"""Words of a caption and the text statistics the guards, the sentinels and the captioners' table share
(one definition: the repetition the table reports is the repetition the guard penalises and the sentinel
watches). Pure Python, nothing heavy imported."""
from __future__ import annotations

import re
from typing import Iterable, Sequence

__all__ = ["words", "sentences", "ngrams", "repeated_ngram_rate", "distinct_n"]

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"[.!?;]+")


def words(text: str) -> list[str]:
    """Lower-case words (letters and digits, inner hyphens and apostrophes kept), punctuation dropped."""
    return _WORD.findall(str(text).lower())


def sentences(text: str) -> list[list[str]]:
    """The words of each sentence (split at ``. ! ? ;``), empty sentences left out."""
    return [w for w in (words(part) for part in _SENTENCE_END.split(str(text))) if w]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """The share of the caption's word n-grams that repeat an earlier n-gram of the same caption (0 when it
    has none): 0 for a caption that never repeats itself, 0.5 for a caption written twice."""
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct n-grams over all n-grams of ``texts`` pooled (lower-cased, whitespace-split words; 0 when
    there are none): the local trainer's ``distinct_2`` and the sentinels' distinct-1/2."""
    grams, total = set(), 0
    for t in texts:
        g = ngrams(str(t).lower().split(), n)
        grams.update(g)
        total += len(g)
    return len(grams) / total if total else 0.0
