"""The few English word lists the perturbations need besides spaCy's tags and parse.

spaCy says *where* a word sits (a noun heading a phrase, an adjectival modifier, a preposition, a verb with
an object); these lists say what a handful of closed-class words *mean*, which no tagger does: which words
name a colour (and which colours are the same colour), which relation words contradict each other, which
nouns are places in a picture rather than things in it. Relations come from :mod:`cim.relations`, the
project's one table (the demo world, its questions and the judges read it too).

Everything here is English, like the spaCy pipeline the project ships (``en_core_web_sm``); another language
needs its own lists and pipeline (``AuditConfig.spacy_model``).
"""
from __future__ import annotations

from cim.relations import CONTRADICTS

__all__ = ["COLOUR_CLASS", "RELATION_CLASS", "RELATION_CONTRADICTS", "LOCATIVE_NOUNS", "META_NOUNS", "LIGHT_VERBS",
           "PRAISE", "ARTICLE_WORDS", "colour_class", "relation_class"]

# colour word -> colour class: a swap must change the class ("violet" for "purple" is no error)
_COLOURS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet", "maroon"),
    "orange": ("orange",),
    "yellow": ("yellow", "golden", "gold"),
    "green": ("green", "lime", "olive"),
    "blue": ("blue", "navy", "azure", "cyan", "turquoise", "teal"),
    "purple": ("purple", "violet", "lilac", "lavender", "magenta"),
    "pink": ("pink",),
    "brown": ("brown", "tan", "beige"),
    "black": ("black",),
    "white": ("white",),
    "grey": ("grey", "gray", "silver"),
}
COLOUR_CLASS: dict[str, str] = {w: cls for cls, words in _COLOURS.items() for w in words}

# single relation/position words -> the class they signal (cim.relations' classes, plus picture positions);
# multi-word relations ("in front of", "next to") are left alone: a swap keeps the caption's length
RELATION_CLASS: dict[str, str] = {
    "left": "left", "right": "right",
    "above": "above", "over": "above",
    "below": "below", "beneath": "below", "under": "below", "underneath": "below",
    "top": "top", "bottom": "bottom",
    "inside": "in", "outside": "out",
}
# class -> the classes that contradict it (cim.relations.CONTRADICTS where it has them)
RELATION_CONTRADICTS: dict[str, frozenset[str]] = {
    **{c: frozenset(v) for c, v in CONTRADICTS.items() if c in ("left", "right", "above")},
    "below": frozenset({"above"}),
    "top": frozenset({"bottom"}), "bottom": frozenset({"top"}),
    "in": frozenset({"out"}), "out": frozenset({"in"}),
}

# nouns that name a place in the picture, not a thing in it ("at the top", "on the left"): never swapped as
# objects (a relation swap handles the ones that have an opposite)
LOCATIVE_NOUNS = frozenset({
    "left", "right", "top", "bottom", "middle", "center", "centre", "front", "back", "side", "edge", "corner",
    "foreground", "rear", "end", "inside", "outside", "part", "area", "rest"})

# nouns that name the picture, a property or a generic thing, not an object in it: never swapped in or out as
# objects, nor added as hallucinated objects ("a purple colour", "there is also a background")
META_NOUNS = frozenset({
    "background", "backdrop", "colour", "color", "image", "picture", "photo", "photograph", "drawing",
    "illustration", "scene", "view", "shot", "pattern", "texture", "style", "design", "version", "type", "kind",
    "sort", "lot", "bit", "number", "thing", "object", "item", "figure", "shape", "detail", "way", "one"})

# verbs that say "the picture shows" rather than relate two things: never swapped as relations
LIGHT_VERBS = frozenset({"be", "have", "show", "depict", "feature", "display", "contain", "include", "see",
                         "picture", "portray", "present", "illustrate", "capture", "look", "appear", "seem"})

# generic praise (the hack CLIP-score rewards fall for: "a beautiful, high quality photo"), appended verbatim
PRAISE = "This is a beautiful, high-quality, highly detailed and stunning image."

ARTICLE_WORDS = frozenset({"a", "an"})


def colour_class(word: str) -> str | None:
    return COLOUR_CLASS.get(word.lower())


def relation_class(word: str) -> str | None:
    return RELATION_CLASS.get(word.lower())
