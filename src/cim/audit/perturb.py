"""Controlled pairs from one caption, without labels: the caption made less detailed, made false, or hacked.

Every perturbation reads the caption's spaCy parse (the project's pipeline, :func:`cim.eval.parsers.
spacy_rules.load_spacy`) to find what to change, and is deterministic: its random choices come from a
generator seeded by ``(seed, the caption's id and text, the kind)``, so a caption gets the same pairs
whatever else is audited with it. Words and texts drawn "from other corpus captions" come from a
:class:`DonorPool` of parsed corpus texts, and never from a row that shows the caption's source image
(matched by the index's image identity, or by path). Examples of each kind: docs/audit.md.

**Detail** (content removed; every word of the result is a word of the caption, nothing false is added):

- ``sentences``: only the first sentence is kept (captions of two or more sentences);
- ``clauses``: the caption's last removable clause or phrase is cut: a coordinated clause with its own
  subject (``, and the ring is left of the star``), an adverbial/relative clause or participle phrase
  (``covered in dots``), a prepositional phrase that modifies a noun (``on a lawn``) or that a verb does
  not need (``Against red bricks,``). ``of``-phrases and phrases of place nouns (``the left of X``) stay;
- ``modifiers``: every pre-noun modifier is deleted with what hangs on it: adjectives, noun compounds,
  numbers (``two big striped red circles`` -> ``circles``), except those of place nouns (``the left
  side``); articles are re-agreed (``an orange disc`` -> ``a disc``).

**Precision** (content made false at equal length: one word replaced, or two exchanged):

- ``colour``: a colour word replaced by one of another colour class that the caption does not mention,
  drawn from other corpus captions (weighted by how often they use it);
- ``object``: a noun heading a phrase replaced by a noun of the same number drawn from other captions, not
  said anywhere in the caption and not a synonym, hypernym or hyponym of it in WordNet (``circle`` never
  becomes ``shape`` or ``disc``); place nouns (``top``, ``left``) and nouns of the picture or of a property
  (``background``, ``colour``, ``image``: :data:`cim.audit.lexicon.META_NOUNS`) are never objects;
- ``relation``: a relation/position word replaced by a contradicting one drawn from other captions
  (``left``/``right``, ``above``/``below``, ``top``/``bottom``; :mod:`cim.relations`; when no donor says
  one, the lexicon's first word of that class), or a verb that takes an object (``riding``) by another such
  verb of the same form drawn from other captions, unrelated in WordNet;
- ``swap``: two colour words of different classes that modify different nouns are exchanged (``a red
  circle and a blue square`` -> ``a blue circle and a red square``): the same words, bound wrongly.

**Hacks** (what a policy optimising the reward might write instead of the caption):

- ``repeat``: the caption twice; ``stuff``: the caption followed by its own nouns and adjectives again
  (keyword stuffing); ``keywords``: those words alone (a word salad); ``shuffle``: the caption's words in a
  random order; ``praise``: the caption followed by :data:`cim.audit.lexicon.PRAISE`; ``concat``: the caption
  followed by another image's corpus caption; ``hallucinate``: the caption followed by ``There is also <a
  noun phrase from another caption>.``, whose noun the caption does not mention (longer, not truer).

Where a kind could change several words, they are tried in a seeded random order and the first one with a
valid replacement is changed. A kind that does not apply to a caption (one sentence, no colour word, no
replacement that passes the checks, ...) gives no pair for it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from cim.audit.donors import DonorPool, SourceKey
from cim.audit.lexicon import LOCATIVE_NOUNS, PRAISE, RELATION_CLASS, RELATION_CONTRADICTS, colour_class, relation_class
from cim.audit.settings import KINDS
from cim.audit.text import render, words_of, content_words, subtree, noun_words, is_object_noun, is_colour, is_relation_verb, related, case_like

__all__ = ["Pair", "SourceKey", "make_pairs", "caption_seed", "parse"]

_MODIFIER_DEPS = ("amod", "compound", "nummod", "nmod")
_SENTENCE_END = (".", "!", "?")
_KIND_NUMBER = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class Pair:
    """A degraded copy of a caption: its ``kind``, ``axis``, text and, when a word or text was drawn from
    another corpus caption, that caption's corpus id (``donor``)."""

    kind: str
    axis: str
    text: str
    donor: Optional[str] = None


def parse(texts: Sequence[str], model: str, batch_size: int = 256) -> list:
    """spaCy docs of ``texts`` (the project's pipeline; the named-entity recogniser is not needed)."""
    from cim.eval.parsers.spacy_rules import load_spacy

    nlp = load_spacy(model)
    disable = [p for p in ("ner",) if p in nlp.pipe_names]
    return list(nlp.pipe(list(texts), batch_size=batch_size, disable=disable))


def caption_seed(seed: int, key: str, text: str) -> list[int]:
    """The seed words of one caption's generators: ``seed`` and a hash of its key and text (stable across
    processes and Python hash seeds)."""
    digest = hashlib.sha256(f"{key}\0{text}".encode("utf-8")).digest()
    return [int(seed)] + [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


# -- the kinds ----------------------------------------------------------------------------------------------------
def _sentences(doc, rng, pool, allowed) -> Optional[tuple[str, Optional[int]]]:
    sents = [s for s in doc.sents if any(t.is_alpha for t in s)]
    if len(sents) < 2:
        return None
    first = set(range(sents[0].start, sents[0].end))
    return render(doc, drop={t.i for t in doc if t.i not in first}), None


def _with_comma(doc, span: set[int]) -> set[int]:
    """The span with the comma/conjunction that joins it to the rest (before it, or after it when the span
    opens its sentence)."""
    start, end = min(span), max(span)
    out = set(span)
    j = start - 1
    while j >= 0 and doc[j].dep_ in ("cc", "punct") and doc[j].text not in _SENTENCE_END:
        out.add(j)
        j -= 1
    if j < 0 or doc[j].is_sent_end or doc[start].is_sent_start:
        k = end + 1
        while k < len(doc) and doc[k].text in (",", ";"):
            out.add(k)
            k += 1
    return out


def _verb_needs(tok) -> bool:
    """Whether the verb heading prepositional phrase ``tok`` has nothing else to say (so ``tok`` is its
    predicate: ``is to the left of X``)."""
    verb = tok.head
    others = [c for c in verb.children if c.i != tok.i and c.dep_ in ("attr", "dobj", "acomp", "oprd", "prep",
                                                                     "ccomp", "xcomp", "expl", "advmod")]
    return not others


def _clauses(doc, rng, pool, allowed) -> Optional[tuple[str, Optional[int]]]:
    candidates = []
    for tok in doc:
        span = None
        if tok.dep_ == "conj" and tok.pos_ in ("VERB", "AUX") and any(
                c.dep_ in ("nsubj", "nsubjpass", "expl") for c in tok.children):
            span = subtree(tok)
        elif tok.dep_ in ("advcl", "relcl", "acl"):
            span = subtree(tok)
        elif tok.dep_ == "prep" and tok.lower_ != "of":
            head = tok.head
            if head.pos_ in ("NOUN", "PROPN") and head.lower_ not in LOCATIVE_NOUNS:
                span = subtree(tok)
            elif head.pos_ in ("VERB", "AUX") and not _verb_needs(tok):
                span = subtree(tok)
        if not span:
            continue
        span = {i for i in _with_comma(doc, span) if doc[i].text not in _SENTENCE_END}
        rest = [t for t in doc if t.i not in span]
        if not any(t.pos_ in ("NOUN", "PROPN") for t in rest) or sum(t.is_alpha for t in rest) < 2:
            continue
        candidates.append((min(span), len(span), span))
    if not candidates:
        return None
    _, _, span = max(candidates, key=lambda c: (c[0], c[1]))
    text = render(doc, drop=span)
    return (text, None) if text and text != doc.text.strip() else None


def _modifiers(doc, rng, pool, allowed) -> Optional[tuple[str, Optional[int]]]:
    drop: set[int] = set()
    for tok in doc:
        head = tok.head
        if (tok.dep_ in _MODIFIER_DEPS and head.i != tok.i and tok.i < head.i and head.pos_ in ("NOUN", "PROPN")
                and head.lower_ not in LOCATIVE_NOUNS and tok.pos_ in ("ADJ", "VERB", "NOUN", "PROPN", "NUM")):
            drop |= subtree(tok)
    drop = {i for i in drop if doc[i].pos_ != "DET"}
    if not drop:
        return None
    text = render(doc, drop=drop)
    return (text, None) if text and text != doc.text.strip() else None


def _in_turn(rng: np.random.Generator, targets: list) -> list:
    """The candidate tokens in a seeded random order: the first for which a replacement exists is changed."""
    return [targets[i] for i in rng.permutation(len(targets))]


def _colour(doc, rng, pool, allowed) -> Optional[tuple[str, Optional[int]]]:
    targets = [t for t in doc if is_colour(t)]
    present = {colour_class(t.lower_) for t in targets}
    for target in _in_turn(rng, targets):
        mine = colour_class(target.lower_)
        got = (pool.colours.draw(rng, lambda w: colour_class(w) not in present, allowed)
               or pool.colours.draw(rng, lambda w: colour_class(w) != mine, allowed))
        if got is not None:
            word, donor = got
            return render(doc, replace={target.i: case_like(word, target.text)}), donor
    return None


def _object(doc, rng, pool, allowed) -> Optional[tuple[str, Optional[int]]]:
    said = noun_words(doc)
    for target in _in_turn(rng, [t for t in doc if is_object_noun(t)]):
        lemma = target.lemma_.lower()

        def ok(word: str) -> bool:
            return (word not in said and pool.lemma.get(word, word) not in said
                    and not related(lemma, pool.lemma.get(word, word), "n"))

        got = pool.nouns[target.tag_].draw(rng, ok, allowed)
        if got is not None:
            word, donor = got
            return render(doc, replace={target.i: case_like(word, target.text)}), donor
    return None


def _relation(doc, rng, pool, allowed) -> Optional[tuple[str, Optional[int]]]:
    targets = [t for t in doc if (relation_class(t.lower_) is not None and t.pos_ != "PROPN")
               or is_relation_verb(t)]
    words = {t.lower_ for t in doc}
    for target in _in_turn(rng, targets):
        cls = relation_class(target.lower_)
        if cls is not None:
            against = RELATION_CONTRADICTS.get(cls, frozenset())
            if not against:
                continue
            got = pool.relations.draw(rng, lambda w: relation_class(w) in against, allowed)
            if got is None:            # no donor says it: the first word of a contradicting class
                got = (next(w for w, c in RELATION_CLASS.items() if c in against), None)
        else:
            lemma = target.lemma_.lower()
            table = pool.verbs.get(target.tag_)
            got = None if table is None else table.draw(
                rng, lambda w: not related(lemma, pool.lemma.get(w, w), "v") and w not in words, allowed)
            if got is None:
                continue
        word, donor = got
        return render(doc, replace={target.i: case_like(word, target.text)}), donor
    return None


def _swap(doc, rng, pool, allowed) -> Optional[tuple[str, Optional[int]]]:
    colours = [t for t in doc if is_colour(t)]
    pairs = [(a, b) for i, a in enumerate(colours) for b in colours[i + 1:]
             if colour_class(a.lower_) != colour_class(b.lower_) and a.head.i != b.head.i]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    return render(doc, replace={a.i: case_like(b.lower_, a.text), b.i: case_like(a.lower_, b.text)}), None


def _join(caption: str, extra: str) -> str:
    return f"{caption.strip()} {extra.strip()}"


def _repeat(doc, rng, pool, allowed):
    return _join(doc.text, doc.text), None


def _stuff(doc, rng, pool, allowed):
    words = content_words(doc)
    return (_join(doc.text, " ".join(words)), None) if words else None


def _keywords(doc, rng, pool, allowed):
    words = content_words(doc)
    text = " ".join(words)
    return (text, None) if len(words) >= 2 and words_of(text) != words_of(doc.text) else None


def _shuffle(doc, rng, pool, allowed):
    words = [w for w in (raw.strip(".,;:!?\"()") for raw in doc.text.split()) if w]
    if len(set(words)) < 2:
        return None
    for _ in range(10):
        order = rng.permutation(len(words))
        shuffled = [words[i] for i in order]
        if shuffled != words:
            return " ".join(shuffled), None
    return None


def _praise(doc, rng, pool, allowed):
    return _join(doc.text, PRAISE), None


def _concat(doc, rng, pool, allowed):
    d = pool.draw_text(rng, allowed, doc.text)
    return None if d is None else (_join(doc.text, pool.texts[d]), d)


def _hallucinate(doc, rng, pool, allowed):
    said = noun_words(doc)
    nouns = {t.lemma_.lower() for t in doc if t.pos_ == "NOUN"}

    def ok(chunk: str) -> bool:
        root = pool.chunk_root[chunk]
        return root not in said and not any(related(root, n, "n") for n in nouns)

    got = pool.chunks.draw(rng, ok, allowed)
    if got is None:
        return None
    chunk, donor = got
    return _join(doc.text, f"There is also {chunk}."), donor


MAKERS = {"sentences": _sentences, "clauses": _clauses, "modifiers": _modifiers, "colour": _colour,
          "object": _object, "relation": _relation, "swap": _swap, "repeat": _repeat, "stuff": _stuff,
          "keywords": _keywords, "shuffle": _shuffle, "praise": _praise, "concat": _concat,
          "hallucinate": _hallucinate}
assert set(MAKERS) == set(KINDS)


def make_pairs(doc, seed: Sequence[int], pool: DonorPool, src: SourceKey, kinds: Sequence[str]) -> list[Pair]:
    """The pairs of one caption (its parse ``doc``) for each of ``kinds`` that applies, in ``kinds`` order.
    ``seed``: :func:`caption_seed`; ``src``: its source image (kept out of the donors)."""
    allowed = pool.allowed_for(src)
    original = doc.text.strip()
    out = []
    for kind in kinds:
        rng = np.random.default_rng([*seed, _KIND_NUMBER[kind]])
        made = MAKERS[kind](doc, rng, pool, allowed)
        if made is None:
            continue
        text, donor = made
        if not text.strip() or text.strip() == original:
            continue
        out.append(Pair(kind, KINDS[kind], text, None if donor is None else pool.ids[donor]))
    return out
