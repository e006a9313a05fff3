"""CAPTURE (Dong et al. 2024), ported from the algorithm specified in docs/evaluation.md.

Pipeline, per caption: parse sentence by sentence and merge (:mod:`cim.eval.parsers`) -> filter -> match
against each reference caption -> P/R/F1 per component -> weighted score, averaged over references and then
over samples.

- **Filter**: an object is kept if it is not in :data:`STOP_WORDS` and it (or each word of it) is a noun of
  the caption (the caption's lemmatised ``NN*`` tokens); attributes are kept when their object passes the
  noun test (no stop list); relations when both heads pass it.
- **Match**, greedy and one-to-one, three stages: exact string equality -> synonym (one string is a
  substring of the other, or the two share a WordNet lemma name over all their synsets) -> soft: every
  leftover candidate adds its best cosine against the leftover references (SBERT) to the candidate credit,
  every leftover reference its best cosine against the leftover candidates to the reference credit (no
  threshold; many-to-one). Attributes are pooled over objects. Relations: exact tuple equality; the synonym
  stage needs all three parts to pass; the soft stage compares the joined triple strings.
- **Score**: ``P = candidate credit / #candidates``, ``R = reference credit / #references``,
  ``F1 = 2PR / (P + R)`` (``eps = 1e-6`` in every denominator), ``CAPTURE = (5 F1_obj + 5 F1_attr + 2 F1_rel)
  / 12``.

Deliberate deviations from the reference code (``capture_metric`` 0.1.13), all stated in every result's
``protocol``:

- **Deterministic**: candidates and references are matched in sorted order (the reference iterates Python
  sets, so its greedy matches, and scores, move with ``PYTHONHASHSEED``).
- **Runs on CPU**, no process pool; the text encoder is passed in (the paper's is ``all-mpnet-base-v2``; the
  offline default is ``all-MiniLM-L6-v2``, and the result records which) and phrase embeddings are computed
  once per distinct phrase, in one batch per call.
- **Noun test**: spaCy's tagger instead of NLTK's (whose data is not obtainable offline); objects and noun
  tokens are compared lower-cased.
- **Substring quirk kept by default**: the reference's synonym stage tests raw substrings, so ``"man"``
  matches ``"woman"`` and ``"cat"`` matches ``"catamaran"``. ``substring="word"`` fixes it (whole-word
  containment: ``"tower"`` still matches ``"clock tower"``); the default ``"faithful"`` keeps the quirk so
  numbers stay comparable with published ones.
- :data:`STOP_WORDS` is **reconstructed**: the abstract nouns the reference filters (317 entries, including
  its spelling variants such as ``atmosfere`` and capitalised duplicates), written out here after the
  published ``capture_metric`` list (Apache-2.0, the CAPTURE authors). Objects are compared lower-cased.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from cim.config import choices
from cim.eval.parsers import SceneGraph, SceneGraphParser, Triple
from cim.eval.wordnet import lemma_names

# The abstract / stop nouns CAPTURE removes from the object set (reconstructed: see the module docstring).
STOP_WORDS: frozenset[str] = frozenset({
    'accent', 'action', 'activity', 'adventure', 'aesthetic', 'afternoon', 'air', 'ambiance', 'angle',
    'anticipation', 'appeal', 'appearance', 'architecture', 'area', 'arrangement', 'art', 'atmosfere',
    'atmosphere', 'Atmosphäre', 'atmosphère', 'attention', 'attire', 'aura', 'back', 'backdrop', 'background',
    'balance', 'base', 'beauty', 'beauté', 'bloom', 'body language', 'border', 'bottom', 'boundary',
    'breakfast', 'bustle', 'camaraderie', 'case', 'celebration', 'center', 'chaos', 'character', 'charm',
    'city life', 'cityscape', 'clothing', 'coexistence', 'collage', 'color', 'comfort', 'community',
    'companionship', 'component', 'composition', 'condition', 'confidence', 'connection', 'content', 'context',
    'contrast', 'conversation', 'countertop', 'countryside', 'court', 'creativity', 'culture', 'curiosity',
    'darkness', 'day', 'decor', 'decoration', 'demeanor', 'depth', 'description', 'design', 'destination',
    'detail', 'determination', 'dining experience', 'direction', 'display', 'distance', 'diversity',
    'ecosystem', 'edge', 'effect', 'elegance', 'element', 'emotion', 'enclosure', 'end', 'energy', 'ensemble',
    'entrance', 'environment', 'era', 'essence', 'essential', 'event', 'everyday life', 'excitement', 'expanse',
    'experience', 'exploration', 'expression', 'exterior', 'facade', 'feature', 'field', 'figure', 'flavor',
    'flight', 'focus', 'foreground', 'form', 'formation', 'frame', 'freedom', 'front', 'functionality', 'game',
    'gaze', 'glow', 'grandeur', 'group', 'handle', 'harmony', 'height', 'her', 'heritage', 'him', 'history',
    'horizon', 'hue', 'hustle', 'identity', 'illustration', 'image', 'imagery', 'imagination', 'individual',
    'information', 'infrastructure', 'ingredient', 'innocence', 'intensity', 'interaction', 'interior',
    'interpretation', 'intersection', 'it', 'item', 'journey', 'joy', 'key', 'knowledge', 'landscape', 'layer',
    'layout', 'left', 'life', 'living space', 'location', 'love', 'marking', 'marvel', 'match', 'material',
    'memory', 'message', 'mid-air', 'middle', 'modernity', 'Moment', 'moment', 'mood', 'motion', 'movement',
    'music', 'mystery', 'name', 'narrative', 'natural', 'natural beauté', 'Nature', 'nature', 'neighborhood',
    'network', 'night', 'nostalgia', 'object', 'operation', 'order', 'outdoor', 'outdoors', 'outline', 'page',
    'palette', 'pant', 'passion', 'pattern', 'peak', 'performance', 'personality', 'perspective', 'photo',
    'photograph', 'picture', 'place', 'placement', 'play', 'pleasure', 'point', 'pose', 'position',
    'positioning', 'posture', 'power', 'presence', 'presentation', 'promise', 'purpose', 'reality', 'red',
    'reflection', 'relaxation', 'remote', 'resilience', 'rhythm', 'right', 'rim', 'role', 'routine', 'row',
    'scale', 'scene', 'scenery', 'section', 'serenity', 'setting', 'shape', 'short', 'show', 'side',
    'significance', 'silhouette', 'simplicity', 'site', 'skill', 'snapshot', 'solitude', 'space', 'spectacle',
    'spectator', 'speed', 'spirit', 'spot', 'stance', 'step', 'stillness', 'story', 'strap', 'stride',
    'structure', 'style', 'subject', 'surface', 'surrounding', 'surroundings', 'symbolism', 'tableau', 'tall',
    'task', 'team', 'teamwork', 'technology', 'tension', 'terrain', 'text', 'texture', 'theme', 'thrill',
    'time', 'tip', 'tone', 'top', 'topping', 'touch', 'track', 'traffic', 'tranquility', 'travel', 'treat',
    'turn', 'uniform', 'unity', 'universe', 'urban', 'urban life', 'urban setting', 'vantage point', 'vastness',
    'vibe', 'vibrancy', 'view', 'viewer', 'viewpoint', 'warmth', 'weather', 'white', 'wild', 'wilderness',
    'winter', 'work', 'workspace', 'world',
})

STOP_WORDS_LOWER: frozenset[str] = frozenset(w.lower() for w in STOP_WORDS)
EPS = 1e-6
WEIGHTS = (0.5, 0.5, 0.2)          # objects : attributes : relations = 5 : 5 : 2
SUBSTRING_MODES = choices("eval.substring")
COMPONENTS = ("object", "attribute", "relation")


# --------------------------------------------------------------------------------------------- filtering
def noun_test(word: str, nouns: frozenset[str] | set[str]) -> bool:
    """CAPTURE's noun test: the word, or each space-separated piece of it, is a noun of the caption."""
    return word in nouns or all(piece in nouns for piece in word.split(" "))


@dataclass(frozen=True)
class Elements:
    """A caption's filtered visual elements, sorted."""

    objects: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    relations: tuple[Triple, ...]

    @property
    def attribute_words(self) -> list[str]:
        """Attributes pooled over objects (the object they belong to is ignored; repeats are kept)."""
        return [a for obj in sorted(self.attributes) for a in self.attributes[obj]]


def capture_elements(graph: SceneGraph, stop_words: frozenset[str] | set[str] = STOP_WORDS_LOWER) -> Elements:
    """The filter step (docs/evaluation.md): stop list + noun test on objects, noun test on attribute owners and relations.
    ``stop_words`` are compared with the lower-cased objects (pass them lower-cased)."""
    nouns = graph.nouns
    objects = tuple(o for o in graph.objects if o.lower() not in stop_words and noun_test(o, nouns))
    attributes = {k: v for k, v in graph.attributes.items() if v and noun_test(k, nouns)}
    relations = tuple(r for r in graph.relations if noun_test(r[0], nouns) and noun_test(r[2], nouns))
    return Elements(objects, attributes, relations)


# ---------------------------------------------------------------------------------------------- matching
def synonym_match(a: str, b: str, substring: str = "faithful") -> bool:
    """Stage 2: substring either way (``faithful``: raw characters; ``word``: whole words), or a shared
    WordNet lemma name over all synsets (multi-word strings joined with ``_``)."""
    if substring == "faithful":
        if a in b or b in a:
            return True
    elif substring == "word":
        pa, pb = f" {' '.join(a.split())} ", f" {' '.join(b.split())} "
        if pa in pb or pb in pa:
            return True
    else:
        raise ValueError(f"substring must be one of {SUBSTRING_MODES}, got {substring!r}")
    return bool(lemma_names(a) & lemma_names(b))


def _encoder_name(encoder) -> str:
    """What a result records: the model behind a :class:`cim.encoders.TextEncoder`, else its ``name``."""
    describe = getattr(encoder, "describe", None)
    if callable(describe):
        info = describe()
        return str(info.get("model") or info.get("name"))
    return getattr(encoder, "name", None) or type(encoder).__name__


class PhraseEmbeddings:
    """Cosine similarities between phrases through a text encoder, one encoding per distinct phrase.

    ``encoder`` is anything with ``encode(list[str]) -> (n, d) array`` (a :class:`cim.encoders.TextEncoder`
    or a ``SentenceTransformer``); rows are L2-normalised here again.
    """

    def __init__(self, encoder, name: str | None = None):
        self.encoder = encoder
        self.name = name or _encoder_name(encoder)
        self._cache: dict[str, np.ndarray] = {}
        self.encode_calls = 0

    def prefetch(self, phrases: Iterable[str]) -> None:
        missing = sorted({p for p in phrases if p not in self._cache})
        if not missing:
            return
        vecs = np.asarray(self.encoder.encode(missing), dtype=np.float32)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        self.encode_calls += 1
        self._cache.update(zip(missing, vecs))

    def matrix(self, phrases: Sequence[str]) -> np.ndarray:
        self.prefetch(phrases)
        return np.stack([self._cache[p] for p in phrases]) if phrases else np.zeros((0, 1), np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """(len(a), len(b)) cosine matrix."""
        self.prefetch([*a, *b])
        return self.matrix(a) @ self.matrix(b).T


@dataclass
class Match:
    """Outcome of matching one candidate list against one reference list."""

    n_cand: int
    n_ref: int
    exact: int = 0
    synonym: int = 0
    left_cand: list[str] = field(default_factory=list)   # soft-stage inputs (strings; triples joined)
    left_ref: list[str] = field(default_factory=list)
    cand_soft: float = 0.0
    ref_soft: float = 0.0

    @property
    def cand_credit(self) -> float:
        return self.exact + self.synonym + self.cand_soft

    @property
    def ref_credit(self) -> float:
        return self.exact + self.synonym + self.ref_soft

    def prf(self, eps: float = EPS) -> tuple[float, float, float]:
        p = self.cand_credit / (self.n_cand + eps)
        r = self.ref_credit / (self.n_ref + eps)
        return p, r, 2 * p * r / (p + r + eps)


def hard_match(cands: Sequence, refs: Sequence, same: Optional[Callable[[object, object], bool]],
               as_text: Callable[[object], str] = str) -> Match:
    """Stages 1-2, greedy one-to-one over the sorted lists; ``same=None`` skips the synonym stage."""
    cands, refs = sorted(cands), sorted(refs)
    m = Match(len(cands), len(refs))
    used_c: set[int] = set()
    used_r: set[int] = set()
    for stage, test in (("exact", lambda a, b: a == b), ("synonym", same)):
        if test is None:
            continue
        for i, c in enumerate(cands):
            if i in used_c:
                continue
            for j, r in enumerate(refs):
                if j not in used_r and test(c, r):
                    used_c.add(i)
                    used_r.add(j)
                    setattr(m, stage, getattr(m, stage) + 1)
                    break
    m.left_cand = [as_text(c) for i, c in enumerate(cands) if i not in used_c]
    m.left_ref = [as_text(r) for j, r in enumerate(refs) if j not in used_r]
    return m


def soft_match(m: Match, embeddings: Optional[PhraseEmbeddings]) -> Match:
    """Stage 3: each leftover adds its best cosine on the other side (only when both sides have leftovers)."""
    if embeddings is not None and m.left_cand and m.left_ref:
        sim = embeddings.similarity(m.left_cand, m.left_ref)
        m.cand_soft = float(sim.max(axis=1).sum())
        m.ref_soft = float(sim.max(axis=0).sum())
    return m


def _join(triple: Triple) -> str:
    return " ".join(triple)


# ----------------------------------------------------------------------------------------------- scoring
def align_inputs(gts: Mapping[str, Sequence[str] | str], res: Mapping[str, Sequence[str] | str]
                 ) -> tuple[dict[str, list[str]], dict[str, str], list[str], dict[str, int]]:
    """pycocoevalcap-style ``gts = {id: [reference, ...]}``, ``res = {id: [candidate]}`` (bare strings and
    ``None`` accepted) -> (references, candidate per id, the ids on both sides sorted, counts of the rest)."""
    refs = {k: [v or ""] if isinstance(v, str) or v is None else [r or "" for r in v] for k, v in gts.items()}
    cands = {k: (v or "") if isinstance(v, str) or v is None else ((v[0] or "") if len(v) else "")
             for k, v in res.items()}
    ids = sorted(k for k in refs if k in cands and refs[k])
    counts = {"samples": len(ids), "missing_candidate": sum(1 for k in refs if k not in cands),
              "unknown_id": sum(1 for k in cands if k not in refs),
              "empty_candidate": sum(1 for k in ids if not cands[k].strip())}
    return refs, cands, ids, counts


@dataclass
class PairScore:
    """One candidate against one reference."""

    object: tuple[float, float, float]
    attribute: tuple[float, float, float]
    relation: tuple[float, float, float]
    capture: float
    matches: dict[str, Match]


@dataclass
class CaptureResult:
    score: float                      # mean over samples, 0..1 (papers print x100)
    components: dict[str, float]      # object_precision ... relation_f1, means over samples
    per_sample: dict[str, dict]       # id -> {"capture": .., "object_f1": .., ...}
    counts: dict[str, int]            # samples, empty captions, ids without reference / candidate
    protocol: dict                    # parser, encoder, weights, substring mode, deviations

    def to_dict(self) -> dict:
        return {"capture": self.score, **self.components, "counts": self.counts, "protocol": self.protocol}


class Capture:
    """CAPTURE with a pluggable parser and text encoder (see the module docstring).

    ``text_encoder=None`` disables the soft stage (and is recorded so); ``substring`` is ``"faithful"``
    (the reference's raw substring test, ``man`` ~ ``woman``) or ``"word"``.
    """

    def __init__(self, parser: SceneGraphParser, text_encoder=None, *, encoder_name: str | None = None,
                 weights: tuple[float, float, float] = WEIGHTS, synonym_matching: bool = True,
                 stop_words: bool | Iterable[str] = True, substring: str = "faithful", eps: float = EPS):
        if substring not in SUBSTRING_MODES:
            raise ValueError(f"substring must be one of {SUBSTRING_MODES}, got {substring!r}")
        self.parser = parser
        self.embeddings = PhraseEmbeddings(text_encoder, encoder_name) if text_encoder is not None else None
        self.weights = tuple(float(w) for w in weights)
        self.synonym_matching = synonym_matching
        self.stop_words = frozenset(w.lower() for w in (STOP_WORDS if stop_words is True else (stop_words or ())))
        self.substring = substring
        self.eps = eps
        self._graphs: dict[str, SceneGraph] = {}

    # -- protocol -----------------------------------------------------------------------------------
    def protocol(self) -> dict:
        describe = getattr(self.parser, "describe", None)
        return {
            "metric": "CAPTURE",
            "parser": self.parser.name,
            "parser_details": describe() if describe else {"name": self.parser.name},
            "text_encoder": self.embeddings.name if self.embeddings else None,
            "soft_matching": self.embeddings is not None,
            "synonym_matching": self.synonym_matching,
            "substring": self.substring,
            "weights": {"object": self.weights[0], "attribute": self.weights[1], "relation": self.weights[2]},
            "stop_words": len(self.stop_words),
            "stop_words_source": "reconstructed after capture_metric 0.1.13" if self.stop_words else "none",
            "match_order": "sorted (deterministic)",
            "averaging": "over references, then over samples",
            "eps": self.eps,
        }

    # -- parsing ------------------------------------------------------------------------------------
    def graphs(self, captions: Sequence[str]) -> list[SceneGraph]:
        """Parse (each distinct caption once per scorer) and return the graphs in input order."""
        todo = sorted({c for c in captions if c not in self._graphs})
        if todo:
            self._graphs.update(zip(todo, self.parser.parse_many(todo)))
        return [self._graphs[c] for c in captions]

    def elements(self, captions: Sequence[str]) -> list[Elements]:
        return [capture_elements(g, self.stop_words) for g in self.graphs(captions)]

    # -- matching -----------------------------------------------------------------------------------
    def same_phrase(self, a: str, b: str) -> bool:
        return synonym_match(a, b, self.substring)

    def same_triple(self, a: Triple, b: Triple) -> bool:
        return all(self.same_phrase(x, y) for x, y in zip(a, b))

    def hard_matches(self, cand: Elements, ref: Elements) -> dict[str, Match]:
        syn = self.synonym_matching
        return {
            "object": hard_match(cand.objects, ref.objects, self.same_phrase if syn else None),
            "attribute": hard_match(cand.attribute_words, ref.attribute_words, self.same_phrase if syn else None),
            "relation": hard_match(cand.relations, ref.relations, self.same_triple if syn else None, _join),
        }

    def finish(self, matches: dict[str, Match]) -> PairScore:
        for m in matches.values():
            soft_match(m, self.embeddings)
        prf = {k: matches[k].prf(self.eps) for k in COMPONENTS}
        w = self.weights
        score = (w[0] * prf["object"][2] + w[1] * prf["attribute"][2] + w[2] * prf["relation"][2]) / sum(w)
        return PairScore(prf["object"], prf["attribute"], prf["relation"], score, matches)

    def score_pair(self, candidate: str, reference: str) -> PairScore:
        cand, ref = self.elements([candidate, reference])
        return self.finish(self.hard_matches(cand, ref))

    # -- corpus -------------------------------------------------------------------------------------
    def compute_score(self, gts: Mapping[str, Sequence[str] | str], res: Mapping[str, Sequence[str] | str]
                      ) -> CaptureResult:
        """``gts = {id: [reference, ...]}``, ``res = {id: [candidate]}`` (pycocoevalcap style; bare strings
        are accepted too). Ids present on one side only are counted, not scored; empty candidates score 0."""
        gts, res, ids, counts = align_inputs(gts, res)
        counts["empty_reference"] = sum(1 for k in ids for r in gts[k] if not r.strip())
        counts["references"] = sum(len(gts[k]) for k in ids)
        texts = [res[k] for k in ids] + [r for k in ids for r in gts[k]]
        elements = dict(zip(texts, self.elements(texts)))
        pending = [(k, [self.hard_matches(elements[res[k]], elements[r]) for r in gts[k]])
                   for k in ids]
        if self.embeddings is not None:   # one encoder call for every soft-stage phrase of the run
            self.embeddings.prefetch(p for _, ms in pending for m in ms for x in m.values()
                                     for p in (x.left_cand + x.left_ref) if x.left_cand and x.left_ref)
        per_sample: dict[str, dict] = {}
        for k, ms in pending:
            pairs = [self.finish(m) for m in ms]
            row = {"capture": fmean(p.capture for p in pairs)}
            for comp in COMPONENTS:
                for i, stat in enumerate(("precision", "recall", "f1")):
                    row[f"{comp}_{stat}"] = fmean(getattr(p, comp)[i] for p in pairs)
            per_sample[k] = row
        keys = ["capture"] + [f"{c}_{s}" for c in COMPONENTS for s in ("precision", "recall", "f1")]
        means = {key: (fmean(r[key] for r in per_sample.values()) if per_sample else math.nan) for key in keys}
        score = means.pop("capture")
        return CaptureResult(score, means, per_sample, counts, self.protocol())
