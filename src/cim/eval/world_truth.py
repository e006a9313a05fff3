"""The demo world's ground truth in the metrics' terms: one place for what the scene graphs say.

- :func:`scene_recall`: a caption against its image's scene graph, deterministic, no parser model: did it
  name each object (shape), each object's attributes (colour, size, texture) in that object's noun phrase,
  and each relation (a relation phrase between the two objects' mentions, in either direction)? Also the
  attribute *precision* (attribute words attached to a recognised object that are right), so a captioner
  that piles up attribute words is not rewarded. Uses the world's own word lists (``cim.data.world_scene``),
  synonyms included. The local backend's held-out evaluation and the ``ground_truth`` metric use it.
- :func:`reference_lists` turns a scene graph into the two lists SC-Captioner takes from GPT (objects that
  widen object precision; attributes per object that are the attribute-precision reference), so the
  fine-grained metrics run on the world with ground truth in place of GPT's lists.
- :func:`parser_recall` parses the world's reference captions (which state every object with its size,
  colour and texture, and the relation between the first two objects) and measures how much of the
  ground-truth scene graph the parser recovers, and how much of what it outputs is true. Every offline
  number then carries its parser's error.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Sequence

from cim.data.world_scene import (COLOUR_WORDS, NP_BREAK, SHAPE_WORDS, SIZE_WORDS, TEXTURE_POSTNOMINAL,
                                  TEXTURE_WORDS)
from cim.relations import WORLD_INVERSE, WORLD_PHRASE_WORDS, WORLD_PHRASES, world_relation

if TYPE_CHECKING:
    from cim.eval.parsers import SceneGraph, SceneGraphParser

# a noun phrase ends where the world's captions put a function word or a relation phrase, and at the
# position / background words "near" (the top) and "front" (of a brick wall)
_BREAK = NP_BREAK | WORLD_PHRASE_WORDS | {"near", "front"}
_ATTR_WORDS = {"colour": COLOUR_WORDS, "size": SIZE_WORDS, "texture": TEXTURE_WORDS}
_ALL_ATTR = {kind: {w: name for name, ws in table.items() for w in ws} for kind, table in _ATTR_WORDS.items()}
_SHAPE_OF = {w: name for name, ws in SHAPE_WORDS.items() for w in ws}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)?|[,.;]", text.lower())


def _mentions(toks: list[str]) -> list[tuple[int, str, dict]]:
    """(index, shape, {kind: value}) for every shape word, with the attributes in its noun phrase."""
    out = []
    for i, w in enumerate(toks):
        shape = _SHAPE_OF.get(w)
        if shape is None:
            continue
        attrs: dict[str, str] = {}
        j = i - 1
        while j >= 0 and toks[j] not in _BREAK and toks[j] not in ",.;":
            for kind, table in _ALL_ATTR.items():
                if toks[j] in table and kind not in attrs:
                    attrs[kind] = table[toks[j]]
            j -= 1
        for name, phrases in TEXTURE_POSTNOMINAL.items():
            for p in phrases:
                pw = p.split()
                if toks[i + 1:i + 1 + len(pw)] == pw and "texture" not in attrs:
                    attrs["texture"] = name
        out.append((i, shape, attrs))
    return out


def _has_phrase_between(toks: list[str], lo: int, hi: int, phrases: Sequence[str]) -> bool:
    span = " " + " ".join(toks[lo + 1:hi]) + " "
    return any(f" {p} " in span for p in phrases)


def scene_recall(caption: str, scene: dict) -> dict[str, float]:
    """``object_recall``, ``attribute_recall``, ``attribute_precision``, ``relation_recall`` in [0, 1]
    (``relation_recall`` is NaN for a scene without relations)."""
    toks = words(caption)
    ments = _mentions(toks)
    objs = scene["objects"]
    found_obj, attr_hit, attr_total = 0, 0, 0
    attached_right, attached_all = 0, 0
    for obj in objs:
        mine = [m for m in ments if m[1] == obj["shape"]]
        found_obj += bool(mine)
        best = 0
        for _, _, attrs in mine:
            best = max(best, sum(attrs.get(k) == obj[k] for k in ("colour", "size", "texture")))
        attr_hit += best
        attr_total += 3
    shapes = {o["shape"]: o for o in objs}
    for _, shape, attrs in ments:
        if shape in shapes:
            attached_all += len(attrs)
            attached_right += sum(shapes[shape][k] == v for k, v in attrs.items())
    rels = scene.get("relations") or []
    rel_hit = 0
    for rel in rels:
        s_shape, o_shape = objs[rel["subject"]]["shape"], objs[rel["object"]]["shape"]
        s_idx = [m[0] for m in ments if m[1] == s_shape]
        o_idx = [m[0] for m in ments if m[1] == o_shape]
        fwd, inv = WORLD_PHRASES[rel["relation"]], WORLD_PHRASES[WORLD_INVERSE[rel["relation"]]]
        ok = any(_has_phrase_between(toks, i, j, fwd) for i in s_idx for j in o_idx if i < j) or \
            any(_has_phrase_between(toks, j, i, inv) for i in s_idx for j in o_idx if j < i)
        rel_hit += ok
    return {
        "object_recall": found_obj / len(objs) if objs else float("nan"),
        "attribute_recall": attr_hit / attr_total if attr_total else float("nan"),
        "attribute_precision": attached_right / attached_all if attached_all else float("nan"),
        "relation_recall": rel_hit / len(rels) if rels else float("nan"),
    }


# ----------------------------------------------------------------------------------- reference lists
def _vocab():
    from cim.data import world_captions, world_scene

    return world_scene, world_captions


def _lemmas(words: Iterable[str]) -> list[str]:
    from cim.eval.wordnet import lemmatize

    return sorted({lemmatize(w.lower(), "n") for w in words})


def shape_words(shape: str) -> list[str]:
    ws, _ = _vocab()
    return _lemmas(ws.SHAPE_WORDS[shape])


def attribute_words(obj: dict) -> list[str]:
    ws, _ = _vocab()
    return sorted({*ws.COLOUR_WORDS[obj["colour"]], *ws.SIZE_WORDS[obj["size"]], *ws.TEXTURE_WORDS[obj["texture"]]})


def background_nouns(background: str) -> list[str]:
    _, wc = _vocab()
    return _lemmas(phrase.split()[-1] for _, phrase in wc.BG_PHRASES[background])


def reference_lists(scene: dict) -> tuple[list[str], dict[str, list[str]]]:
    """(objects, {object: attributes}) from a scene graph, every synonym the captions may use included."""
    objects: set[str] = set(background_nouns(scene.get("background", "plain"))) if scene.get("background") else set()
    attrs: dict[str, set[str]] = {}
    for obj in scene.get("objects", []):
        for word in shape_words(obj["shape"]):
            objects.add(word)
            attrs.setdefault(word, set()).update(attribute_words(obj))
    return sorted(objects), {k: sorted(v) for k, v in sorted(attrs.items())}


# ----------------------------------------------------------------------------------------- parser error
def _shape_of(word: str, scene: dict) -> int | None:
    for i, obj in enumerate(scene["objects"]):
        if word in shape_words(obj["shape"]):
            return i
    return None


def graph_vs_scene(graph: SceneGraph, scene: dict) -> dict[str, tuple[int, int, int, int]]:
    """Per component: (true found, true total, output correct, output total).

    Objects: the scene's shapes (any synonym). Attributes: (shape, colour/size/texture) pairs, found when a
    word of that attribute is among the parsed attributes of a parsed object naming that shape. Relations:
    only the relation the reference caption always states (objects 0 and 1), found when a parsed triple
    links the two shapes with that relation or its inverse; output relations are judged against every
    relation of the scene (spatial ones only; others count as wrong).
    """
    ws, _ = _vocab()
    objs = scene["objects"]
    parsed_shapes = {w: _shape_of(w, scene) for w in graph.objects}
    found_objs = {i for i in parsed_shapes.values() if i is not None}
    all_shape_words = {w for s in ws.SHAPE_WORDS for w in shape_words(s)}
    out_objs = [w for w in graph.objects if w in all_shape_words]
    obj_stats = (len(found_objs), len(objs), sum(1 for w in out_objs if parsed_shapes[w] is not None), len(out_objs))

    true_pairs = {(i, field, obj[field]) for i, obj in enumerate(objs) for field in ("colour", "size", "texture")}
    word_field = {}
    for field, table in (("colour", ws.COLOUR_WORDS), ("size", ws.SIZE_WORDS), ("texture", ws.TEXTURE_WORDS)):
        for value, words in table.items():
            for w in words:
                word_field[w] = (field, value)
    found_pairs, out_total, out_correct = set(), 0, 0
    for word, attributes in graph.attributes.items():
        i = parsed_shapes.get(word)
        for a in attributes:
            if a not in word_field:
                continue
            out_total += 1
            field, value = word_field[a]
            if i is not None and (i, field, value) in true_pairs:
                out_correct += 1
                found_pairs.add((i, field, value))
    attr_stats = (len(found_pairs), len(true_pairs), out_correct, out_total)

    truth = {(r["subject"], r["object"]): r["relation"] for r in scene.get("relations", [])}
    truth.update({(o, s): WORLD_INVERSE[r] for (s, o), r in list(truth.items())})
    stated = (0, 1) if len(objs) > 1 else None
    rel_found, rel_out, rel_ok = False, 0, 0
    for s, r, o in graph.relations:
        si, oi = _shape_of(s, scene), _shape_of(o, scene)
        if si is None or oi is None:
            continue
        rel_out += 1
        cls = world_relation(r)   # the relation class table: cim.relations
        if cls is not None and truth.get((si, oi)) == cls:
            rel_ok += 1
            if stated and {si, oi} == set(stated):
                rel_found = True
    rel_stats = (int(rel_found), 1 if stated else 0, rel_ok, rel_out)
    return {"object": obj_stats, "attribute": attr_stats, "relation": rel_stats}


def parser_recall(parser: SceneGraphParser, captions: Sequence[str], scenes: Sequence[dict]) -> dict:
    """Recall and precision of ``parser`` on captions that state their scene graphs (the world's references)."""
    totals = {k: [0, 0, 0, 0] for k in ("object", "attribute", "relation")}
    for graph, scene in zip(parser.parse_many(list(captions)), scenes):
        for k, stats in graph_vs_scene(graph, scene).items():
            totals[k] = [a + b for a, b in zip(totals[k], stats)]
    out: dict = {"parser": parser.name, "captions": len(captions)}
    for k, (found, true, ok, total) in totals.items():
        out[f"{k}_recall"] = found / true if true else float("nan")
        out[f"{k}_precision"] = ok / total if total else float("nan")
        out[f"{k}_counts"] = {"found": found, "true": true, "output_correct": ok, "output": total}
    out["definition"] = graph_vs_scene.__doc__.strip()
    return out
