"""Text from a caption's spaCy parse, for the audit's pairs: rendering a parse with words dropped or
replaced (articles re-agreed, spacing tidied), the words a caption says, which tokens are objects, colours and
relation verbs, and WordNet relatedness (a swap must not be a synonym, hypernym or hyponym)."""
from __future__ import annotations

import functools
import re
from typing import Optional

from cim.audit.lexicon import ARTICLE_WORDS, LIGHT_VERBS, LOCATIVE_NOUNS, META_NOUNS, colour_class, relation_class

__all__ = ["render", "words_of", "content_words", "subtree", "noun_words", "is_object_noun", "is_colour",
           "is_relation_verb", "related", "case_like", "NOUN_TAGS", "COLOUR_DEPS"]

NOUN_TAGS = ("NN", "NNS")
COLOUR_DEPS = ("amod", "compound", "nmod", "acomp", "conj", "oprd", "appos")


# -- text from a parse ----------------------------------------------------------------------------------------
def case_like(new: str, old: str) -> str:
    """``new`` with ``old``'s capitalisation (all capitals, a capital first letter, or as it is)."""
    if len(old) > 1 and old.isupper():
        return new.upper()
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _article(article: str, following: str) -> str:
    word = "an" if following[:1].lower() in "aeiou" else "a"
    return case_like(word, article)


def _tidy(text: str, capital: bool) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r",(\s*[,.;:!?])", r"\1", text)
    text = re.sub(r"([.!?])\s*[,;:]+", r"\1", text)
    text = re.sub(r"^[\s,;:]+", "", text).strip()
    if capital and text:
        text = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return text


def render(doc, drop=frozenset(), replace: Optional[dict] = None) -> str:
    """The caption without the tokens ``drop`` and with ``replace`` (token index -> word); an article whose
    next word changed is re-agreed (a/an); spacing and sentence capitals tidied."""
    replace = replace or {}
    kept = [t for t in doc if t.i not in drop]
    out = []
    for n, tok in enumerate(kept):
        text = replace.get(tok.i, tok.text)
        if tok.lower_ in ARTICLE_WORDS and n + 1 < len(kept):
            nxt = kept[n + 1]
            if nxt.i != tok.i + 1 or nxt.i in replace:
                text = _article(text, replace.get(nxt.i, nxt.text))
        out.append(text + tok.whitespace_)
    first = next((c for c in doc.text if c.isalpha()), "")
    return _tidy("".join(out), capital=first.isupper())


def words_of(text: str) -> list[str]:
    """Lower-cased words of a text, articles folded to ``a`` (what the invariants compare)."""
    words = re.findall(r"[^\W_]+(?:[-'][^\W_]+)*", text.lower())
    return ["a" if w in ARTICLE_WORDS else w for w in words]


def content_words(doc) -> list[str]:
    seen: dict[str, None] = {}
    for t in doc:
        if t.pos_ in ("NOUN", "PROPN", "ADJ") and t.is_alpha:
            seen.setdefault(t.lower_, None)
    return list(seen)


def subtree(tok) -> set[int]:
    return {t.i for t in tok.subtree}


def noun_words(doc) -> set[str]:
    return {w for t in doc if t.pos_ in ("NOUN", "PROPN") for w in (t.lower_, t.lemma_.lower())}


def is_object_noun(tok) -> bool:
    return (tok.pos_ == "NOUN" and tok.tag_ in NOUN_TAGS and tok.dep_ not in ("compound", "nmod")
            and tok.is_alpha and tok.lower_ not in LOCATIVE_NOUNS and tok.lemma_.lower() not in META_NOUNS
            and tok.lower_ not in META_NOUNS and colour_class(tok.lower_) is None
            and relation_class(tok.lower_) is None)


def is_colour(tok) -> bool:
    return colour_class(tok.lower_) is not None and (tok.pos_ == "ADJ" or tok.dep_ in COLOUR_DEPS)


def is_relation_verb(tok) -> bool:
    return (tok.pos_ == "VERB" and tok.is_alpha and tok.lemma_.lower() not in LIGHT_VERBS
            and any(c.dep_ == "dobj" for c in tok.children))


# -- WordNet: is one word another's synonym, hypernym or hyponym? -----------------------------------------------
@functools.lru_cache(maxsize=None)
def _senses(word: str, pos: str) -> frozenset:
    from cim.eval.wordnet import wordnet

    return frozenset(wordnet().synsets(word, pos))


@functools.lru_cache(maxsize=None)
def _above(word: str, pos: str) -> frozenset:
    """Every sense of ``word`` and every hypernym of any of them."""
    out = set(_senses(word, pos))
    for s in _senses(word, pos):
        out.update(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()))
    return frozenset(out)


@functools.lru_cache(maxsize=None)
def related(a: str, b: str, pos: str = "n") -> bool:
    """True when ``a`` and ``b`` share a WordNet sense or one is a hypernym of the other, in any sense
    (conservative: a swap that might still be true is refused). Words WordNet does not know are related
    only to themselves."""
    a, b = a.lower(), b.lower()
    if a == b:
        return True
    sa, sb = _senses(a, pos), _senses(b, pos)
    if not sa or not sb:
        return False
    return bool(sa & _above(b, pos)) or bool(sb & _above(a, pos))
