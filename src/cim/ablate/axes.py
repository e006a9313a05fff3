"""The four ablation axes of the paper as lists of variants.

A variant is a name and the ``key=value`` overrides that make it, applied over the base configuration. Every
key an axis varies is set explicitly in every one of its variants (``reward.mode`` *and* ``reward.beta`` for
the components and beta axes, every encoder field for the encoder axis), so no variant inherits a value
from another or from the base's own choice of that key.

- ``components`` (the paper's Fig. 4): ``reward.mode`` = grc, qir, both.
- ``scale`` (Fig. 5): nested corpus subsets: the training images' rows plus a share of the other rows
  (:mod:`cim.ablate.subsets`); ``corpus`` names the share.
- ``encoders`` (Table 4): text encoder x image encoder, by preset name (:data:`TEXT_PRESETS`,
  :data:`IMAGE_PRESETS`; a text name that is no preset is a sentence-transformers model name or folder).
- ``beta``: ``reward.beta`` with ``reward.mode=both``.
- ``aggregate``: ``reward.aggregate`` = sum, gdpo (one scalar, or GDPO's per-term normalisation). The reward's
  value is the same either way, so its quality order is too: this axis is measured on the pipeline's trained
  rows alone (:data:`FROM_PIPELINE`, :mod:`cim.ablate.from_pipeline`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from cim.errors import ConfigError

__all__ = ["Variant", "AXES", "FROM_PIPELINE", "TEXT_PRESETS", "IMAGE_PRESETS", "defaults", "variants"]


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]        # over the base configuration; every key the axis varies
    corpus: float | None = None       # scale: the share of the non-training rows (None: the whole corpus)
    fields: dict = field(default_factory=dict, compare=False)   # numbers the report's row carries (beta)


TEXT_PRESETS: dict[str, dict] = {
    "minilm": {"name": "sentence-transformers", "model": "all-MiniLM-L6-v2"},      # embedded default
    "mpnet": {"name": "sentence-transformers", "model": "all-mpnet-base-v2"},      # the paper's
}
IMAGE_PRESETS: dict[str, dict] = {
    "lite0": {"name": "efficientnet-lite", "model": "efficientnet-lite0", "pretrained": "embedded"},
    "lite2": {"name": "efficientnet-lite", "model": "efficientnet-lite2", "pretrained": "embedded"},
    # full scale (GPU machines; weights from the local HF cache only)
    "vit-h-14": {"name": "open_clip", "model": "ViT-H-14", "pretrained": "laion2b_s32b_b79k"},   # the paper's
    "dinov3": {"name": "dinov3", "model": "facebook/dinov3-vitl16-pretrain-lvd1689m", "pretrained": "hub"},
}


def defaults(cfg, axis: str) -> list[str]:
    """What `cim ablate AXIS` runs without options: the config's ``ablate`` section (the schema's defaults are
    the embedded ones, what runs on a CPU, offline); encoders: ``[texts, images]``, each comma-separated."""
    a = cfg.ablate
    if axis == "encoders":
        return [",".join(a.text), ",".join(a.image)]
    return [f"{v:g}" if isinstance(v, float) else str(v) for v in getattr(a, axis)]


def _numbers(values: Sequence[str], what: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except ValueError:
        raise ConfigError(f"{what}: {', '.join(values)} are not all numbers") from None
    return out


def components(cfg, values: Sequence[str]) -> list[Variant]:
    from cim.config import choices

    bad = [v for v in values if v not in choices("reward.mode")]
    if bad:
        raise ConfigError(f"components: {', '.join(bad)} is not one of {', '.join(choices('reward.mode'))}")
    return [Variant(v, (f"reward.mode={v}", f"reward.beta={float(cfg.reward.beta)}")) for v in values]


def beta(cfg, values: Sequence[str]) -> list[Variant]:
    betas = _numbers(values, "beta")
    return [Variant(f"beta={b:g}", ("reward.mode=both", f"reward.beta={b}"), fields={"beta": b}) for b in betas]


def scale(cfg, values: Sequence[str]) -> list[Variant]:
    shares = sorted(set(_numbers(values, "scale")))
    if shares[0] < 0 or shares[-1] > 1:
        raise ConfigError("scale: shares of the non-training corpus rows must lie in [0, 1]")
    fixed = (f"reward.mode={cfg.reward.mode}", f"reward.beta={float(cfg.reward.beta)}")
    return [Variant(f"train+{s:.0%}", fixed, corpus=s) for s in shares]


def _preset(presets: dict, name: str, side: str) -> dict:
    if name in presets:
        return presets[name]
    if side == "text":
        return {"name": "sentence-transformers", "model": name}
    raise ConfigError(f"encoders: image encoder {name!r} is not one of {', '.join(presets)}")


def encoders(cfg, values: Sequence[str]) -> list[Variant]:
    if len(values) != 2:
        raise ConfigError("encoders takes two lists: text encoders and image encoders (--text A,B --image C,D)")
    texts, images = ([v for v in part.split(",") if v] for part in values)
    fixed = (f"reward.mode={cfg.reward.mode}", f"reward.beta={float(cfg.reward.beta)}")
    out = []
    for t in texts:
        for i in images:
            te, ie = _preset(TEXT_PRESETS, t, "text"), _preset(IMAGE_PRESETS, i, "image")
            overrides = fixed + tuple(f"encoders.text.{k}={v}" for k, v in te.items()) \
                + tuple(f"encoders.image.{k}={v}" for k, v in ie.items())
            out.append(Variant(f"{t}+{i}", overrides))
    return out


def aggregate(cfg, values: Sequence[str]) -> list[Variant]:
    from cim.config import choices

    bad = [v for v in values if v not in choices("reward.aggregate")]
    if bad:
        raise ConfigError(f"aggregate: {', '.join(bad)} is not one of {', '.join(choices('reward.aggregate'))}")
    return [Variant(v, (f"reward.aggregate={v}",)) for v in values]


AXES: dict[str, Callable[[object, Sequence[str]], list[Variant]]] = {
    "components": components, "scale": scale, "encoders": encoders, "beta": beta, "aggregate": aggregate}
# axes measured on the rows the pipeline trained (its table and curves), not on the reward's quality order
FROM_PIPELINE = frozenset({"aggregate"})


def variants(cfg, axis: str, values: Sequence[str] | None = None) -> list[Variant]:
    """The variants of ``axis``; ``values`` (for encoders, either of its two lists) left out or empty:
    :func:`defaults`'s."""
    if axis not in AXES:
        raise ConfigError(f"unknown ablation axis {axis!r}; one of {', '.join(AXES)}")
    given, default = list(values or []), defaults(cfg, axis)
    if axis == "encoders" and given:
        given = [v or d for v, d in zip(given, default)] + given[2:]
    found = AXES[axis](cfg, given if any(given) else default)
    if not found:
        raise ConfigError(f"{axis}: no variants")
    return found
