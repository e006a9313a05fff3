"""The audit's pair kinds and its settings: ``params.yaml``'s ``audit:`` section (:class:`cim.config.
AuditConfig`, the schema) with a call's keyword arguments over it (:func:`resolve`)."""
from __future__ import annotations

from dataclasses import asdict

from cim.config import AuditConfig, to_dict
from cim.config.schema import AUDIT_AXES
from cim.errors import ConfigError

__all__ = ["AuditConfig", "AXES", "KINDS", "DETAIL", "PRECISION", "HACKS", "resolve", "describe"]

# pair kinds per axis, in report order: the schema's (audit.kinds defaults to every one of them)
AXES: dict[str, tuple[str, ...]] = AUDIT_AXES
DETAIL, PRECISION, HACKS = AXES["detail"], AXES["precision"], AXES["hacks"]
KINDS: dict[str, str] = {k: axis for axis, kinds in AXES.items() for k in kinds}   # kind -> axis

def resolve(cfg, **overrides) -> AuditConfig:
    """``cfg.audit`` with the non-None ``overrides`` applied, checked."""
    values = to_dict(cfg.audit)
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

