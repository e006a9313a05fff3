"""Scene-graph parsers behind one interface, registered by name (``eval.parser.name``).

``parser.parse(caption) -> SceneGraph``: the caption is split into sentences, each sentence is parsed into
entities (with attributes) and ``(subject, relation, object)`` triples, and the sentences are merged the way
CAPTURE merges them (docs/evaluation.md, "CAPTURE"):

- objects: entity heads lemmatised as nouns (WordNet lemmatiser), lower-cased;
- attributes per object: lemmatised as adjectives; an attribute containing ``" of"`` is dropped; a
  numeric attribute (all digits) is a count, not an attribute;
- relations: ``(subject lemma, relation string, object lemma)``.

Every graph also carries ``nouns``: the lemmatised tokens tagged ``NN*`` in the whole caption (spaCy's
tagger; the reference used NLTK's, whose data cannot be had offline), which CAPTURE's noun test needs, and
``parser``: the name of the parser that produced it.

Registered parsers (one module each):

- ``spacy`` (:mod:`cim.eval.parsers.spacy_rules`, the offline default): dependency rules over spaCy's
  English pipeline. Its recall against ground-truth scene graphs is measured on the demo world.
- ``factual`` (:mod:`cim.eval.parsers.factual`): the FACTUAL Flan-T5 parser the reference uses, from a local
  path or the local hub cache only.

A parser whose weights are absent raises :class:`cim.errors.WeightsNotFound` naming what to install.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from cim.eval.wordnet import lemmatize
from cim import plugins
from cim.registry import Registry

__all__ = ["Triple", "SceneGraph", "SceneGraphParser", "GraphBuilder", "PARSERS", "build_parser"]

Triple = tuple[str, str, str]


@dataclass(frozen=True)
class SceneGraph:
    """One caption's merged scene graph (all collections sorted, so iteration order never depends on hashing)."""

    objects: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    relations: tuple[Triple, ...]
    nouns: frozenset[str]
    parser: str
    counts: dict[str, str] = field(default_factory=dict)   # object -> numeric quantity, when stated in digits

    def to_dict(self) -> dict:
        return {"objects": list(self.objects), "attributes": {k: list(v) for k, v in self.attributes.items()},
                "relations": [list(r) for r in self.relations], "parser": self.parser}


class SceneGraphParser(Protocol):
    name: str

    def parse(self, caption: str) -> SceneGraph: ...

    def parse_many(self, captions: Sequence[str]) -> list[SceneGraph]: ...

    def describe(self) -> dict: ...



# name -> builder(model or None, device) -> SceneGraphParser
PARSERS: Registry = plugins.PARSERS


def build_parser(name: str = "spacy", model: str | None = None, device: str = "auto") -> SceneGraphParser:
    """A registered parser by name: ``spacy`` (offline default) or ``factual`` (local weights only)."""
    return PARSERS.get(name)(model, device)


# ----------------------------------------------------------------------------------------------- merging
class GraphBuilder:
    """What every parser feeds: accumulates raw (unlemmatised) entities, attributes and triples over sentences, then merges."""

    def __init__(self) -> None:
        self.objects: set[str] = set()
        self.attributes: dict[str, set[str]] = {}
        self.relations: set[Triple] = set()
        self.counts: dict[str, str] = {}

    @staticmethod
    def _noun(word: str) -> str:
        return lemmatize(" ".join(word.lower().split()), "n")

    def entity(self, head: str) -> str:
        obj = self._noun(head)
        if obj:
            self.objects.add(obj)
        return obj

    def attribute(self, head: str, attribute: str) -> None:
        obj = self.entity(head)
        attribute = " ".join(attribute.lower().split())
        if not obj or not attribute:
            return
        if attribute.isdigit():
            self.counts[obj] = attribute
            return
        attribute = lemmatize(attribute, "a")
        if " of" in attribute:
            return
        self.attributes.setdefault(obj, set()).add(attribute)

    def relation(self, subject: str, relation: str, obj: str) -> None:
        s, o = self.entity(subject), self.entity(obj)
        relation = " ".join(relation.lower().split())
        if s and o and relation:
            self.relations.add((s, relation, o))

    def build(self, nouns: Iterable[str], parser: str) -> SceneGraph:
        return SceneGraph(
            objects=tuple(sorted(self.objects)),
            attributes={k: tuple(sorted(v)) for k, v in sorted(self.attributes.items())},
            relations=tuple(sorted(self.relations)),
            nouns=frozenset(nouns),
            parser=parser,
            counts=dict(sorted(self.counts.items())),
        )

