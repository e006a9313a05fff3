"""Spatial relations: the one table that the demo world, its captions and questions, the parser-error
measure, the offline Relations QA judge and the local backend's recall all read.

- **Classes** (``left``, ``right``, ``above``, ``below``, ``beside``, ``front``, ``behind``, ``on``, ``in``,
  ``with``) are what a relation phrase means, whatever its wording. :data:`KEYWORDS` maps the words that
  signal a class in free text (a parsed relation such as ``"sit to left of"``) to it, in match order: the
  first keyword found decides (so ``"in front of"`` wins over ``"in"``, ``"on top of"`` over ``"on"``).
- :data:`INVERSE` is the class that holds with subject and object swapped (``left`` <-> ``right``; a
  symmetric class is its own inverse); :data:`CONTRADICTS` the classes that cannot hold for the same
  (subject, object) pair at once.
- :data:`WORLD` is what the generated demo world draws: each of its relation names (``"left of"``, ...) with
  its class and the phrases its captions use for it (the first is the canonical one, used in questions).
  The world's inverse relation, the negative questions and the caption phrases all derive from here.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["KEYWORDS", "INVERSE", "CONTRADICTS", "WORLD", "WORLD_RELATIONS", "WORLD_INVERSE", "WORLD_PHRASES",
           "WORLD_PHRASE_WORDS", "spatial_class", "world_relation", "is_symmetric"]

# keyword (as it appears between spaces in a relation phrase) -> class, in match order
KEYWORDS: tuple[tuple[str, str], ...] = (
    ("in front of", "front"), ("behind", "behind"), ("left", "left"), ("right", "right"), ("above", "above"),
    ("over", "above"), ("on top of", "on"), ("below", "below"), ("beneath", "below"), ("under", "below"),
    ("underneath", "below"), ("next to", "beside"), ("beside", "beside"), ("near", "beside"),
    ("inside", "in"), ("in", "in"), ("on", "on"), ("with", "with"),
)
INVERSE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above",
                           "front": "behind", "behind": "front", "beside": "beside"}
CONTRADICTS: dict[str, frozenset[str]] = {
    "left": frozenset({"right"}), "right": frozenset({"left"}), "above": frozenset({"below"}),
    "below": frozenset({"above", "on"}), "on": frozenset({"below"}), "front": frozenset({"behind"}),
    "behind": frozenset({"front"}),
}

# the demo world's relations: name -> (class, the phrases its captions say it with; the first is canonical)
WORLD: dict[str, tuple[str, tuple[str, ...]]] = {
    "left of": ("left", ("to the left of", "left of")),
    "right of": ("right", ("to the right of", "right of")),
    "above": ("above", ("above", "over")),
    "below": ("below", ("below", "beneath", "under")),
    "next to": ("beside", ("next to", "beside")),
}
WORLD_RELATIONS: tuple[str, ...] = tuple(WORLD)
_WORLD_OF_CLASS = {cls: name for name, (cls, _) in WORLD.items()}
WORLD_INVERSE: dict[str, str] = {name: _WORLD_OF_CLASS[INVERSE[cls]] for name, (cls, _) in WORLD.items()}
WORLD_PHRASES: dict[str, tuple[str, ...]] = {name: phrases for name, (_, phrases) in WORLD.items()}
WORLD_PHRASE_WORDS: frozenset[str] = frozenset(w for ps in WORLD_PHRASES.values() for p in ps for w in p.split())


def spatial_class(relation: str) -> tuple[Optional[str], str]:
    """``(class, the relation text with its keyword removed)``: ``"sit to left of"`` -> (``"left"``,
    ``" sit to of "``); ``(None, text)`` when no keyword occurs."""
    text = f" {relation.lower()} "
    for key, cls in KEYWORDS:
        if f" {key} " in text:
            return cls, text.replace(f" {key} ", " ")
    return None, text


def world_relation(relation: str) -> Optional[str]:
    """The demo-world relation (``"left of"``, ...) a parsed relation phrase expresses, or None."""
    cls, _ = spatial_class(relation)
    return _WORLD_OF_CLASS.get(cls) if cls is not None else None


def is_symmetric(cls: Optional[str]) -> bool:
    """A class that holds both ways (``beside``): swapping its heads neither supports nor contradicts it."""
    return cls is not None and INVERSE.get(cls) == cls
