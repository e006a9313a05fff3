"""Scene graphs of the generated demo world: vocabulary, sampling, geometric relations, labels.

A scene graph is a JSON-able dict::

    {"background": "grass",
     "objects": [{"shape": "circle", "colour": "red", "size": "large", "texture": "striped",
                  "position": "left", "x": 0.27, "y": 0.52, "radius": 0.19, "rotation": 12.0,
                  "rgb": [212, 38, 40], "pattern": {...}}, ...],          # objects[0] is the main object
     "relations": [{"subject": 0, "relation": "left of", "object": 1}, ...],  # every pair i < j
     "family": 12, "variant": 3, "bg_seed": 123}     # the prototype it was drawn from; background noise

Symbolic fields (shape, colour, size, texture, position, relations, background) are what captions talk
about; the rest (exact centre, radius, rotation, shade, pattern phase, background variation) is visual
variety that no caption names.
"""
from __future__ import annotations

import colorsys
import re

import numpy as np

from cim.relations import WORLD_INVERSE, WORLD_RELATIONS

SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond")
COLOURS = {  # name -> base RGB; each object's shade is jittered around it
    "red": (210, 40, 40), "orange": (240, 140, 30), "yellow": (240, 215, 40), "green": (40, 170, 70),
    "blue": (40, 90, 215), "purple": (140, 60, 190), "pink": (240, 130, 185), "black": (30, 30, 35),
}
COLOURS_LIST = tuple(COLOURS)
SIZES = ("small", "large")
TEXTURES = ("solid", "striped", "dotted", "checkered")
POSITIONS = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73),
             "center": (0.5, 0.5)}
BACKGROUNDS = ("plain", "grass", "sky", "sand", "brick", "wood", "night", "water")
RELATIONS = WORLD_RELATIONS     # the spatial relation table (cim.relations): names, inverses, caption phrases
INVERSE = WORLD_INVERSE
RADIUS = {"small": (0.09, 0.12), "large": (0.16, 0.2)}   # fraction of the image side
JITTER = 0.07                                             # centre jitter, fraction of the side
N_OBJECTS_P = (0.3, 0.4, 0.3)                             # probability of 1, 2, 3 objects

# words a caption may use for each symbol (the first is the canonical one)
SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square",), "triangle": ("triangle",),
               "star": ("star",), "heart": ("heart",), "ring": ("ring", "hoop"), "cross": ("cross",),
               "diamond": ("diamond", "rhombus")}
COLOUR_WORDS = {"red": ("red",), "orange": ("orange",), "yellow": ("yellow",), "green": ("green",),
                "blue": ("blue",), "purple": ("purple", "violet"), "pink": ("pink",), "black": ("black",)}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
TEXTURE_WORDS = {"solid": ("solid", "plain"), "striped": ("striped", "stripy"),
                 "dotted": ("dotted", "spotted", "polka-dot"), "checkered": ("checkered", "chequered")}
TEXTURE_POSTNOMINAL = {"solid": ("in a single colour",), "striped": ("with stripes",),
                       "dotted": ("with dots", "covered in dots"),
                       "checkered": ("with a checkered pattern", "with a checkerboard pattern")}


def _rgb_jitter(rng: np.random.Generator, rgb: tuple[int, int, int]) -> list[int]:
    """A shade of the named colour: hue, saturation and value moved a little, the name still fits."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    h = (h + rng.uniform(-0.025, 0.025)) % 1.0
    s = float(np.clip(s * rng.uniform(0.85, 1.1), 0, 1))
    v = float(np.clip(v * rng.uniform(0.85, 1.1), 0, 1)) if v > 0.3 else v
    return [int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v)]


def relation_between(a: dict, b: dict) -> str:
    """Where ``a`` is relative to ``b``, from the centres (image y grows downwards)."""
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    if abs(dx) >= abs(dy) and abs(dx) > 0.15:
        return "left of" if dx > 0 else "right of"
    if abs(dy) > 0.15:
        return "above" if dy > 0 else "below"
    return "next to"


def compute_relations(objects: list[dict]) -> list[dict]:
    return [{"subject": i, "relation": relation_between(objects[i], objects[j]), "object": j}
            for i in range(len(objects)) for j in range(i + 1, len(objects))]


def _place(rng: np.random.Generator, obj: dict) -> None:
    """Exact centre, radius and look of an object from its symbols (the variety no caption names)."""
    cx, cy = POSITIONS[obj["position"]]
    lo, hi = RADIUS[obj["size"]]
    obj.update({
        "x": round(float(cx + rng.uniform(-JITTER, JITTER)), 4),
        "y": round(float(cy + rng.uniform(-JITTER, JITTER)), 4),
        "radius": round(float(rng.uniform(lo, hi)), 4),
        "rotation": round(float(rng.uniform(-25, 25)), 2),
        "rgb": _rgb_jitter(rng, COLOURS[obj["colour"]]),
        "pattern": {"period": round(float(rng.uniform(0.045, 0.075)), 4),   # fraction of the side
                    "angle": round(float(rng.choice([0.0, 45.0, 90.0, 135.0]) + rng.uniform(-10, 10)), 2),
                    "phase": round(float(rng.uniform(0, 1)), 4)},
    })


def _overlap_free(circles: list[tuple[float, float, float]], margin: float = 0.8) -> bool:
    """No two (x, y, radius) circles overlap by more than ``1 - margin`` of their radii."""
    return all(np.hypot(xa - xb, ya - yb) >= margin * (ra + rb)
               for i, (xa, ya, ra) in enumerate(circles) for (xb, yb, rb) in circles[i + 1:])


def pick(rng: np.random.Generator, options):
    """One of ``options``, uniformly (one integer draw, so streams stay stable)."""
    return options[int(rng.integers(len(options)))]


def sample_prototypes(rng: np.random.Generator, n_families: int, variants_per_family: int) -> list[dict]:
    """The world's structure. A *family* is a set of 1-3 distinct shapes (what a vague caption names);
    its *variants* differ in what a detailed caption adds: the background and each object's colour,
    texture, size and place. Returns the flat list of variants, each ``{"family", "variant",
    "background", "objects": [{"shape", "colour", "size", "texture", "position"}]}``.
    """
    variants = []
    for f in range(n_families):
        n = int(rng.choice(3, p=N_OBJECTS_P)) + 1
        shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), size=n, replace=False)]
        backgrounds = rng.permutation(len(BACKGROUNDS))   # distinct backgrounds while there are enough
        for v in range(variants_per_family):
            for _ in range(50):
                slots = [list(POSITIONS)[i] for i in rng.choice(len(POSITIONS), size=n, replace=False)]
                objects = [{"shape": shape, "colour": pick(rng, COLOURS_LIST), "size": pick(rng, SIZES),
                            "texture": pick(rng, TEXTURES), "position": slot}
                           for shape, slot in zip(shapes, slots)]
                if _overlap_free([(*POSITIONS[o["position"]], np.mean(RADIUS[o["size"]])) for o in objects]):
                    break
            variants.append({"family": f, "variant": v, "background": BACKGROUNDS[backgrounds[v % len(BACKGROUNDS)]],
                             "objects": objects})
    return variants


def sample_scene(rng: np.random.Generator, prototype: dict | None = None, noise: float = 0.0) -> dict:
    """One image's scene graph: an instance of ``prototype`` (a variant; a fresh random one if None).

    Each symbolic attribute of each object (colour, texture, size) and the background are re-drawn with
    probability ``noise``, so a variant's instances mostly agree but not always, as in real photos of one
    kind of scene. Centres are jittered, shades, rotations and patterns drawn per instance.
    """
    if prototype is None:
        prototype = sample_prototypes(rng, 1, 1)[0]
        prototype = {**prototype, "family": -1, "variant": -1}
    background = pick(rng, BACKGROUNDS) if rng.random() < noise else prototype["background"]
    objects = [dict(o) for o in prototype["objects"]]
    for obj in objects:
        for key, choices in (("colour", COLOURS_LIST), ("texture", TEXTURES), ("size", SIZES)):
            if rng.random() < noise:
                obj[key] = pick(rng, choices)
    for _ in range(50):
        for obj in objects:
            _place(rng, obj)
        if _overlap_free([(o["x"], o["y"], o["radius"]) for o in objects]):
            break
    # the last try is kept even if it overlaps a little: rare, and drawing order settles it
    return {"background": background, "objects": objects, "relations": compute_relations(objects),
            "family": prototype["family"], "variant": prototype["variant"], "bg_seed": int(rng.integers(2**31))}


def coarse_label(scene: dict) -> str:
    """Coarse class for the verification experiment: the main object's shape."""
    return scene["objects"][0]["shape"]


def fine_label(scene: dict) -> str:
    """Fine class: the main object's colour, texture and shape, e.g. ``"red striped circle"``."""
    obj = scene["objects"][0]
    return f"{obj['colour']} {obj['texture']} {obj['shape']}"


# words that end a noun phrase in the world's captions (names_fine_label scans back from the noun)
NP_BREAK = {"a", "an", "the", "and", "of", "is", "are", "to", "on", "in", "at", "against", "beside",
            "next", "above", "below", "beneath", "under", "there", "with", "sits", "lies", "while"}


def names_fine_label(caption: str, scene: dict) -> bool:
    """Does ``caption`` name the main object with its colour, texture and shape in one noun phrase?

    Accepts the synonyms in ``*_WORDS`` in any pre-noun order ("a big red striped disc", "a striped red
    circle") and a post-noun texture ("a red circle with stripes"). A plain/solid texture may also be
    left unsaid ("a red circle" names "red solid circle").
    """
    obj = scene["objects"][0]
    words = re.findall(r"[a-z]+(?:-[a-z]+)?|[,.;]", caption.lower())
    nouns = set(SHAPE_WORDS[obj["shape"]])
    colours = set(COLOUR_WORDS[obj["colour"]])
    textures = set(TEXTURE_WORDS[obj["texture"]])
    post = [p.split() for p in TEXTURE_POSTNOMINAL[obj["texture"]]]
    other_textures = {w for t, ws in TEXTURE_WORDS.items() if t != obj["texture"] for w in ws}
    for i, word in enumerate(words):
        if word not in nouns:
            continue
        pre: list[str] = []
        j = i - 1
        while j >= 0 and words[j] not in NP_BREAK and words[j] not in ",.;":
            pre.append(words[j])
            j -= 1
        if not colours & set(pre):
            continue
        has_texture = bool(textures & set(pre)) or any(words[i + 1:i + 1 + len(p)] == p for p in post)
        if not has_texture and obj["texture"] == "solid" and not other_textures & set(pre):
            has_texture = not any(words[i + 1:i + 3] == ["with", w] for w in ("stripes", "dots", "a"))
        if has_texture:
            return True
    return False


def vocabulary() -> dict:
    return {"shapes": list(SHAPES), "colours": list(COLOURS), "sizes": list(SIZES),
            "textures": list(TEXTURES), "positions": list(POSITIONS), "backgrounds": list(BACKGROUNDS),
            "relations": list(RELATIONS),
            "words": {"shape": SHAPE_WORDS, "colour": COLOUR_WORDS, "size": SIZE_WORDS,
                      "texture": TEXTURE_WORDS, "texture_postnominal": TEXTURE_POSTNOMINAL}}
