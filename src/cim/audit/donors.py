"""The audit's donors: parsed corpus captions that swaps draw words from and concatenation draws texts from,
never a row that shows the audited caption's source image."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from cim.audit.lexicon import ARTICLE_WORDS, relation_class
from cim.audit.text import NOUN_TAGS, is_colour, is_object_noun, is_relation_verb

__all__ = ["DonorPool", "SourceKey"]


@dataclass(frozen=True)
class SourceKey:
    """What a caption's source image is, to keep its rows out of the donors: the image number the index
    gave it (-1: not a corpus image, or unknown) and its file path."""

    group: int = -1
    path: Optional[str] = None


# -- donors -----------------------------------------------------------------------------------------------------
class _Table:
    """Occurrences of words in donor captions; a draw is uniform over the allowed occurrences of acceptable
    words (so words are weighted by how often the corpus uses them)."""

    def __init__(self):
        self._occ: dict[str, list[int]] = defaultdict(list)
        self.words: list[str] = []

    def add(self, word: str, donor: int) -> None:
        self._occ[word].append(donor)

    def freeze(self) -> "_Table":
        self.words = sorted(self._occ)
        self._word_of = np.repeat(np.arange(len(self.words)), [len(self._occ[w]) for w in self.words])
        self._donor_of = np.array([d for w in self.words for d in self._occ[w]], dtype=np.int64)
        return self

    def __len__(self) -> int:
        return len(self._donor_of) if self.words else 0

    def draw(self, rng: np.random.Generator, ok: Callable[[str], bool], allowed: Callable[[int], bool],
             tries: int = 32) -> Optional[tuple[str, int]]:
        n = len(self)
        if not n:
            return None
        for _ in range(tries):
            j = int(rng.integers(n))
            word = self.words[self._word_of[j]]
            if ok(word) and allowed(int(self._donor_of[j])):
                return word, int(self._donor_of[j])
        # rejection failed: the same distribution by enumeration (uniform over allowed occurrences)
        pool = [(w, d) for w in self.words if ok(w) for d in self._occ[w] if allowed(d)]
        if not pool:
            return None
        return pool[int(rng.integers(len(pool)))]


class DonorPool:
    """Parsed corpus captions that swaps draw words from and concatenation draws texts from.

    ``ids``, ``texts``, ``docs``: the donor rows; ``groups``: each row's image number in the index (-1 when
    unknown), ``paths``: its image file. :meth:`allowed` says whether a donor may serve a caption whose
    source image is ``src``: never one that shows that image.
    """

    def __init__(self, ids: Sequence[str], texts: Sequence[str], docs: Sequence, groups: Sequence[int],
                 paths: Sequence[Optional[str]]):
        self.ids, self.texts = list(ids), list(texts)
        self.groups = np.asarray(groups, dtype=np.int64)
        self.paths = list(paths)
        self.nouns = {tag: _Table() for tag in NOUN_TAGS}
        self.colours, self.relations, self.chunks = _Table(), _Table(), _Table()
        self.verbs: dict[str, _Table] = defaultdict(_Table)
        self.lemma: dict[str, str] = {}
        self.chunk_root: dict[str, str] = {}
        for d, doc in enumerate(docs):
            for t in doc:
                if is_object_noun(t):
                    self.nouns[t.tag_].add(t.lower_, d)
                    self.lemma.setdefault(t.lower_, t.lemma_.lower())
                elif is_colour(t):
                    self.colours.add(t.lower_, d)
                if relation_class(t.lower_) is not None and t.pos_ != "PROPN":
                    self.relations.add(t.lower_, d)
                if is_relation_verb(t):
                    self.verbs[t.tag_].add(t.lower_, d)
                    self.lemma.setdefault(t.lower_, t.lemma_.lower())
            for chunk in doc.noun_chunks:
                root = chunk.root
                if (len(chunk) >= 2 and chunk[0].lower_ in ARTICLE_WORDS and root.tag_ == "NN"
                        and is_object_noun(root)):
                    text = chunk.text.lower()
                    self.chunks.add(text, d)
                    self.chunk_root.setdefault(text, root.lemma_.lower())
        for table in (*self.nouns.values(), self.colours, self.relations, self.chunks, *self.verbs.values()):
            table.freeze()

    def __len__(self) -> int:
        return len(self.ids)

    def allowed_for(self, src: SourceKey) -> Callable[[int], bool]:
        def allowed(d: int) -> bool:
            if src.group >= 0 and self.groups[d] == src.group:
                return False
            return not (src.path is not None and self.paths[d] == src.path)
        return allowed

    def draw_text(self, rng: np.random.Generator, allowed: Callable[[int], bool], unlike: str,
                  tries: int = 32) -> Optional[int]:
        """A donor row (uniform) that may serve this caption and whose text differs from ``unlike``."""
        n = len(self.ids)
        for _ in range(tries):
            d = int(rng.integers(n))
            if allowed(d) and self.texts[d].strip() != unlike.strip():
                return d
        pool = [d for d in range(n) if allowed(d) and self.texts[d].strip() != unlike.strip()]
        return pool[int(rng.integers(len(pool)))] if pool else None
