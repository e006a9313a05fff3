"""Named protocols: everything that differs between the paper and the authors' released implementation.

A protocol is data, ``configs/protocols/<name>.yaml``::

    name: official
    description: ...
    params:  {reward.top_k: 3, train.grpo.kl_coef: 0.001, ...}   # dotted config keys -> values
    verl:    {actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu: 8}   # raw verl keys (after the preset)
    sources: {reward.top_k: "released training scripts", ...}     # where each value is stated

It is selected by the top-level config key ``protocol`` (in params.yaml, or ``protocol=NAME`` /
``--protocol NAME`` on a command). :func:`cim.config.load_config` applies its ``params`` between the params
file and the command-line overrides, so an override still wins (this module only reads protocol files; it
knows nothing of the schema); :func:`describe` then lists every such deviation, and every result (MLflow tags, results.json, the evaluation table's notes, the verl launch)
records the protocol and its deviations. The built-in protocols are ``paper`` and ``official``
(docs/protocols.md has the table of their differences and sources).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cim.errors import ConfigError
from cim.io import named_yaml, yaml_names

__all__ = ["PROTOCOL_DIR", "Protocol", "names", "load_protocol", "describe", "label", "tags", "with_protocol"]

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "configs" / "protocols"
_KEYS = {"name", "description", "params", "verl", "sources"}


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    params: dict[str, Any]
    verl: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""
    sha256: str = ""


def names() -> list[str]:
    return yaml_names(PROTOCOL_DIR)


def load_protocol(name: str) -> Protocol:
    """The protocol file ``name`` (a name under configs/protocols/ or a .yaml path), checked for shape."""
    import yaml

    path = named_yaml(name, PROTOCOL_DIR, "protocol", ConfigError)
    raw = path.read_bytes()
    where = f"protocol {name!r} ({path})"
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}"
                          + (f", line {mark.line + 1})" if mark else ")")) from None
    if not isinstance(data, dict) or set(data) - _KEYS:
        extra = sorted(set(data) - _KEYS) if isinstance(data, dict) else []
        raise ConfigError(f"{where}: expected the keys {', '.join(sorted(_KEYS))}; unknown: {', '.join(extra)}")
    params, verl, sources = (data.get(k) or {} for k in ("params", "verl", "sources"))
    for key, block in (("params", params), ("verl", verl), ("sources", sources)):
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: {key} must be a mapping of dotted keys")
    if "protocol" in params:
        raise ConfigError(f"{where}: a protocol cannot set `protocol`")
    return Protocol(str(data.get("name") or path.stem), str(data.get("description") or ""), dict(params),
                    dict(verl), {str(k): str(v) for k, v in sources.items()}, str(path),
                    hashlib.sha256(raw).hexdigest()[:16])


def describe(cfg) -> dict:
    """``{"name", "path", "sha256", "deviations": {key: {"protocol": v, "used": v}}}`` for ``cfg.protocol``;
    ``{"name": "none"}`` without one (the params file alone decides)."""
    from omegaconf import OmegaConf

    name = cfg.protocol
    if not name:
        return {"name": "none"}
    proto = load_protocol(name)
    deviations = {}
    for key, value in proto.params.items():
        used = OmegaConf.select(cfg, key)
        used = OmegaConf.to_container(used) if OmegaConf.is_config(used) else used
        if used != value and not (isinstance(value, (int, float)) and isinstance(used, (int, float))
                                  and float(value) == float(used)):
            deviations[key] = {"protocol": value, "used": used}
    return {"name": proto.name, "path": proto.path, "sha256": proto.sha256, "deviations": deviations}


def label(cfg) -> str:
    """One line for tables and logs: ``official`` or ``official (deviations: reward.top_k=5)``."""
    d = describe(cfg)
    if not d.get("deviations"):
        return d["name"]
    return f"{d['name']} (deviations: " + ", ".join(f"{k}={v['used']}" for k, v in d["deviations"].items()) + ")"


def tags(cfg) -> dict[str, str]:
    """MLflow tags naming the protocol of a run."""
    d = describe(cfg)
    out = {"protocol": d["name"]}
    if d.get("sha256"):
        out["protocol.sha256"] = d["sha256"]
        out["protocol.deviations"] = ",".join(sorted(d["deviations"])) or "none"
    return out


def with_protocol(name: str | None, overrides=()) -> list[str]:
    """``overrides`` with ``protocol=NAME`` first when a protocol is named (``--protocol``, a flow's
    ``protocol``): the protocol sits under the command line's own overrides, which still win."""
    return ([f"protocol={name}"] if name else []) + list(overrides or [])
