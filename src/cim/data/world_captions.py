"""Captions written from a scene graph at known levels of detail and correctness.

Corpus texts (one per corpus image) come at three detail levels, like a real corpus that mixes alt-text and
dense captions:

- ``coarse``: a count, a generic noun, the background or at most one shape ("Two shapes on grass.");
- ``medium``: every object's colour and shape, sometimes the background;
- ``detailed``: sizes, colours, textures, shapes, relations, background and (often) positions.

Evaluation captions of a benchmark image carry a ``level`` and a numeric ``quality``:

=================  =======  =====================================================================
level              quality  text
=================  =======  =====================================================================
detailed-correct   3        everything, correct
coarse-correct     2        the shapes only, or the background and the count only; correct
partly-wrong       1        detailed, with one or two attribute/relation errors (recorded)
wrong              0        detailed description of a different scene
=================  =======  =====================================================================

Several templates and synonyms per level, so that retrieval is not plain string matching.
"""
from __future__ import annotations

import copy

import numpy as np

from cim.relations import WORLD_PHRASES

from .world_scene import (BACKGROUNDS, COLOUR_WORDS, COLOURS, INVERSE, SHAPE_WORDS, SHAPES, SIZE_WORDS,
                          SIZES, TEXTURE_POSTNOMINAL, TEXTURE_WORDS, TEXTURES, compute_relations, pick,
                          sample_scene)

LEVELS = {"detailed-correct": 3, "coarse-correct": 2, "partly-wrong": 1, "wrong": 0}
CORPUS_DETAIL = ("coarse", "medium", "detailed")

BG_PHRASES = {  # background -> (preposition, noun phrase) choices
    "plain": [("on", "a plain background"), ("on", "a blank grey background"), ("on", "a plain backdrop")],
    "grass": [("on", "a grassy background"), ("on", "green grass"), ("on", "a lawn")],
    "sky": [("against", "a blue sky"), ("in", "the sky"), ("against", "a sky background")],
    "sand": [("on", "sand"), ("on", "a sandy background"), ("on", "a beach")],
    "brick": [("in front of", "a brick wall"), ("on", "a brick background"), ("against", "red bricks")],
    "wood": [("on", "a wooden background"), ("on", "wooden planks"), ("on", "a wooden floor")],
    "night": [("against", "a night sky"), ("against", "a starry night background"), ("in", "the night sky")],
    "water": [("on", "water"), ("on", "a watery background"), ("above", "blue waves")],
}
REL_PHRASES = WORLD_PHRASES   # relation -> phrases (cim.relations)
POS_PHRASES = {"left": ("on the left", "at the left"), "right": ("on the right", "at the right"),
               "top": ("at the top", "near the top"), "bottom": ("at the bottom", "near the bottom"),
               "center": ("in the middle", "in the centre")}
GENERIC = ("shape", "object", "figure")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _bg(rng: np.random.Generator, background: str) -> str:
    prep, noun = pick(rng, BG_PHRASES[background])
    return f"{prep} {noun}"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def object_phrase(rng: np.random.Generator, obj: dict, detail: str) -> str:
    """A noun phrase for one object: ``shape`` (coarse), ``colour shape`` (medium), everything (detailed)."""
    shape = pick(rng, SHAPE_WORDS[obj["shape"]])
    if detail == "coarse":
        return _article(shape)
    colour = pick(rng, COLOUR_WORDS[obj["colour"]])
    if detail == "medium":
        return _article(f"{colour} {shape}")
    size = pick(rng, SIZE_WORDS[obj["size"]])
    style = rng.random()
    if style < 0.2:   # texture after the noun
        return _article(f"{size} {colour} {shape}") + " " + pick(rng, TEXTURE_POSTNOMINAL[obj["texture"]])
    texture = pick(rng, TEXTURE_WORDS[obj["texture"]])
    words = [size, colour, texture] if style < 0.6 else [size, texture, colour]
    return _article(" ".join(words + [shape]))


def _the(rng: np.random.Generator, obj: dict) -> str:
    return "the " + pick(rng, SHAPE_WORDS[obj["shape"]])


def _relation(scene: dict, i: int, j: int) -> str:
    for rel in scene["relations"]:
        if rel["subject"] == i and rel["object"] == j:
            return rel["relation"]
        if rel["subject"] == j and rel["object"] == i:
            return INVERSE[rel["relation"]]
    raise KeyError((i, j))


def _nearest(scene: dict, k: int, among: list[int]) -> int:
    objs = scene["objects"]
    return min(among, key=lambda j: (objs[j]["x"] - objs[k]["x"]) ** 2 + (objs[j]["y"] - objs[k]["y"]) ** 2)


def detailed_caption(rng: np.random.Generator, scene: dict, positions: bool = True) -> str:
    """Everything: each object's size, colour, texture and shape, the relations, the background and
    (with ``positions``) where each object sits."""
    objs = scene["objects"]
    nps = [object_phrase(rng, o, "detailed") for o in objs]
    bg = _bg(rng, scene["background"])
    if len(objs) == 1:
        pos = pick(rng, POS_PHRASES[objs[0]["position"]])
        body = pick(rng, [f"{nps[0]} {pos} {bg}", f"{nps[0]} sits {pos}, {bg}",
                           f"there is {nps[0]} {pos} {bg}"])
        return _cap(body) + "."
    rel = pick(rng, REL_PHRASES[_relation(scene, 0, 1)])
    inv = pick(rng, REL_PHRASES[_relation(scene, 1, 0)])
    t = int(rng.integers(4))
    if t == 0:
        first = f"{nps[0]} is {rel} {nps[1]}"
    elif t == 1:
        first = f"{nps[1]} is {inv} {nps[0]}"
    elif t == 2:
        first = f"there is {nps[0]} {rel} {nps[1]}"
    else:
        first = f"{nps[0]} and {nps[1]}, the {SHAPE_WORDS[objs[0]['shape']][0]} {rel} the " \
                f"{SHAPE_WORDS[objs[1]['shape']][0]}"
    clauses = [first]
    if len(objs) == 3:
        k = _nearest(scene, 2, [0, 1])
        clauses.append(f"{nps[2]} is {pick(rng, REL_PHRASES[_relation(scene, 2, k)])} {_the(rng, objs[k])}")
    if rng.random() < 0.5:
        text = _cap(", and ".join(clauses)) + f" {bg}."
    else:
        text = _cap(bg) + ", " + ", and ".join(clauses) + "."
    if positions:
        where = [f"{_the(rng, o)} is {pick(rng, POS_PHRASES[o['position']])}" for o in objs]
        text += " " + _cap(_join(where)) + "."
    return text


def medium_caption(rng: np.random.Generator, scene: dict) -> str:
    """Every object's colour and shape; the background half of the time."""
    parts = _join([object_phrase(rng, o, "medium") for o in scene["objects"]])
    if rng.random() < 0.5:
        return _cap(pick(rng, [parts, f"a picture of {parts}", f"an image showing {parts}"])) + "."
    return _cap(f"{parts} {_bg(rng, scene['background'])}") + "."


def coarse_caption(rng: np.random.Generator, scene: dict) -> str:
    """Alt-text-like: a count or a generic noun, the background, or one shape name."""
    n = len(scene["objects"])
    generic = pick(rng, GENERIC)
    things = _article(generic) if n == 1 else f"{COUNT_WORDS[n]} {generic}s"
    some = _article(generic) if n == 1 else f"some {generic}s"
    bg = _bg(rng, scene["background"])
    main = object_phrase(rng, scene["objects"][0], "coarse")
    options = [f"{things} {bg}", f"{some} {bg}", f"a picture of {things}", f"{things}",
               f"{main} {bg}", f"a simple drawing {bg}", f"{main} and other shapes" if n > 1 else f"{main}"]
    return _cap(pick(rng, options)) + "."


def coarse_correct_caption(rng: np.random.Generator, scene: dict) -> str:
    """The evaluation's coarse level: correct but vague, like a short alt-text. Either the objects'
    shapes or the setting (background and count), never colours, textures, sizes, relations or places."""
    n = len(scene["objects"])
    if rng.random() < 0.5:
        parts = _join([object_phrase(rng, o, "coarse") for o in scene["objects"]])
        return _cap(pick(rng, [parts, f"a picture of {parts}", f"an image with {parts}"])) + "."
    generic = pick(rng, GENERIC)
    things = _article(generic) if n == 1 else f"{COUNT_WORDS[n]} {generic}s"
    bg = _bg(rng, scene["background"])
    return _cap(pick(rng, [f"{things} {bg}", f"a picture of {things} {bg}", f"{bg}, {things}"])) + "."


def corpus_text(rng: np.random.Generator, scene: dict, detail: str) -> str:
    if detail == "coarse":
        return coarse_caption(rng, scene)
    if detail == "medium":
        return medium_caption(rng, scene)
    return detailed_caption(rng, scene, positions=bool(rng.random() < 0.5))


_ERROR_FIELDS = ("colour", "shape", "texture", "size", "relation", "background")


def inject_errors(rng: np.random.Generator, scene: dict, n_errors: int) -> tuple[dict, list[dict]]:
    """A copy of ``scene`` with ``n_errors`` symbolic changes, and the list of what was changed.

    A relation error swaps two objects' places (so positions and relations stay consistent with each
    other, and both become wrong); it needs two objects. Shapes stay distinct within the scene.
    """
    wrong = copy.deepcopy(scene)
    errors: list[dict] = []
    used: set[tuple] = set()
    while len(errors) < n_errors:
        field = pick(rng, _ERROR_FIELDS)
        objs = wrong["objects"]
        if field == "relation":
            if len(objs) < 2 or ("relation",) in used:
                continue
            i, j = sorted(int(v) for v in rng.choice(len(objs), size=2, replace=False))
            true_rel = _relation(scene, i, j)
            for key in ("x", "y", "position"):
                objs[i][key], objs[j][key] = objs[j][key], objs[i][key]
            wrong["relations"] = compute_relations(objs)
            said = _relation(wrong, i, j)
            if said == true_rel:            # e.g. two objects "next to" each other: swap back, try again
                for key in ("x", "y", "position"):
                    objs[i][key], objs[j][key] = objs[j][key], objs[i][key]
                wrong["relations"] = compute_relations(objs)
                continue
            used.add(("relation",))
            errors.append({"kind": "relation", "subject": i, "object": j, "true": true_rel, "said": said})
            continue
        if field == "background":
            if ("background",) in used:
                continue
            said = pick(rng, [b for b in BACKGROUNDS if b != scene["background"]])
            used.add(("background",))
            errors.append({"kind": "background", "true": scene["background"], "said": said})
            wrong["background"] = said
            continue
        i = int(rng.integers(len(objs)))
        if (field, i) in used:
            continue
        choices = {"colour": tuple(COLOURS), "shape": SHAPES, "texture": TEXTURES, "size": SIZES}[field]
        taken = {o["shape"] for o in objs} if field == "shape" else set()
        said = pick(rng, [c for c in choices if c != objs[i][field] and c not in taken])
        used.add((field, i))
        errors.append({"kind": "attribute", "object": i, "field": field, "true": objs[i][field], "said": said})
        objs[i][field] = said
    return wrong, errors


def different_scene(rng: np.random.Generator, scene: dict, prototypes: list[dict] | None = None,
                    noise: float = 0.0) -> dict:
    """Another typical scene of the world, clearly not ``scene``: another background, and a main shape
    that ``scene`` does not contain (an instance of one of ``prototypes``, or a fresh random scene)."""
    shapes = {o["shape"] for o in scene["objects"]}

    def differs(p: dict) -> bool:
        return p["background"] != scene["background"] and p["objects"][0]["shape"] not in shapes

    candidates = [p for p in prototypes or () if differs(p)]
    while True:
        other = sample_scene(rng, pick(rng, candidates) if candidates else None, noise)
        if differs(other):
            return other


def evaluation_captions(rng: np.random.Generator, scene: dict, prototypes: list[dict] | None = None,
                        noise: float = 0.0) -> list[dict]:
    """One caption per level for a benchmark scene (see the module docstring); the wrong caption describes
    an instance of another of the world's ``prototypes``."""
    wrong_scene, errors = inject_errors(rng, scene, int(rng.integers(1, 3)))
    return [
        {"caption": detailed_caption(rng, scene), "level": "detailed-correct", "quality": 3},
        {"caption": coarse_correct_caption(rng, scene), "level": "coarse-correct", "quality": 2},
        {"caption": detailed_caption(rng, wrong_scene), "level": "partly-wrong", "quality": 1,
         "errors": errors},
        {"caption": detailed_caption(rng, different_scene(rng, scene, prototypes, noise)), "level": "wrong",
         "quality": 0},
    ]
