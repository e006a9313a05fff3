"""Ground-truth recall of a caption against a demo-world scene graph (deterministic, no parser model).

For the local backend's held-out evaluation: did the caption name each object (shape), each object's
attributes (colour, size, texture) in that object's noun phrase, and each relation (a relation phrase between
the two objects' mentions, in either direction)? Also the attribute *precision* (attribute words attached to
a recognised object that are right), so that a captioner that piles up attribute words is not rewarded here.
Uses the world's own word lists (``cim.data.world_scene``), synonyms included.
"""
from __future__ import annotations

import re
from typing import Sequence

from cim.data.world_scene import (COLOUR_WORDS, NP_BREAK, SHAPE_WORDS, SIZE_WORDS, TEXTURE_POSTNOMINAL,
                                  TEXTURE_WORDS)
from cim.relations import WORLD_INVERSE, WORLD_PHRASE_WORDS, WORLD_PHRASES

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
