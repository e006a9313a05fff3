"""The reward's item and result: one definition used by the scorer, the service, its clients, verl's reward
function and `cim score`.

An item is ``{"caption": str, "image_id": str}`` (the source image by id: its embedding was precomputed at
indexing time) or ``{"caption": str, "image": path}`` (embedded on the fly; in-process only, the service never
opens paths). The service also echoes an optional string ``id``.

A result has every key of :class:`RewardResult`, always: a scored item has ``error = error_kind = None``; an
item that could not be scored has ``score = upsilon = grc = qir = source_rank = None``, ``retrieved = []``,
``guards = {}``, an ``error``
and its ``error_kind``: ``"caption"`` when the caption itself is no text to score (empty, whitespace, not
UTF-8: the captioner's fault, which a training run may give a floor reward), ``"item"`` when anything else
is wrong (an unknown image id, an unreadable image, a missing field: not the caption's fault).
"""
from __future__ import annotations

from typing import Any, Optional, TypedDict, get_type_hints

__all__ = ["RewardItem", "RewardResult", "RESULT_KEYS", "NUMERIC_KEYS", "ERROR_KINDS", "CaptionError",
           "empty_result", "caption_text", "missing_keys"]


class RewardItem(TypedDict, total=False):
    caption: str
    image_id: str           # the source image by id (the service and verl use only this)
    image: str              # or by path (in-process scoring only)
    id: str                 # echoed by the service, never scored


class RewardResult(TypedDict):
    score: Optional[float]          # upsilon + the weighted guard terms (without guards: upsilon)
    upsilon: Optional[float]        # GRC + beta * QIR (paper Eq. 3; or one term, reward.mode)
    grc: Optional[float]            # Eq. 1
    qir: Optional[float]            # Eq. 2
    guards: dict[str, float]        # each guard term's value in [-1, 0], unweighted ({} without guards)
    retrieved: list[str]            # the top-K corpus ids the caption retrieved
    source_rank: Optional[int]      # rank (1..K) of the first hit showing the source image, before excluding it
    truncated: bool                 # the caption was cut to MAX_CAPTION_CHARS before tokenising
    error: Optional[str]            # why the item was not scored; None when it was
    error_kind: Optional[str]       # "caption" | "item" (see the module doc); None when scored


RESULT_KEYS: tuple[str, ...] = tuple(get_type_hints(RewardResult))
# The keys whose values are numbers (or a bool, or None when unscored): what a metrics logger can average.
NUMERIC_KEYS: tuple[str, ...] = tuple(k for k in RESULT_KEYS if k not in ("retrieved", "guards", "error", "error_kind"))
ERROR_KINDS = ("caption", "item")


class CaptionError(ValueError):
    """The caption is no text to score (empty, whitespace only, not UTF-8): ``error_kind = "caption"``."""


def empty_result(error: Optional[str] = None, kind: Optional[str] = None) -> RewardResult:
    """A result with no scores: the start of every result, and the whole of an unscorable one (``kind``:
    the ``error_kind``, "item" when an error is given without one)."""
    return {"score": None, "upsilon": None, "grc": None, "qir": None, "guards": {}, "retrieved": [],
            "source_rank": None, "truncated": False, "error": error,
            "error_kind": (kind or "item") if error is not None else None}


def missing_keys(result: Any) -> list[str]:
    """The :data:`RESULT_KEYS` a result lacks (all of them when it is not a dict)."""
    if not isinstance(result, dict):
        return list(RESULT_KEYS)
    return [k for k in RESULT_KEYS if k not in result]


def caption_text(raw: Any) -> str:
    """The caption as text, or :class:`CaptionError` saying why it cannot be scored.

    Bytes must be UTF-8; a string must be encodable as UTF-8 (a lone UTF-16 surrogate such as ``"\\ud800"``
    is valid JSON but no text, and makes the tokenizer raise); empty or whitespace-only captions are refused.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CaptionError(f"caption is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not isinstance(raw, str):
        raise CaptionError(f"caption must be a string, got {type(raw).__name__}")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CaptionError(f"caption is not valid UTF-8 text ({exc.reason}: {raw[exc.start]!r} at character "
                           f"{exc.start})") from None
    if not raw.strip():
        raise CaptionError("caption is empty or whitespace only")
    return raw
