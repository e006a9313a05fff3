"""One structured schema for params.yaml: every key, its default and its allowed values live here.

Every stage reads its own section. Overrides use ``key=value`` (dotted paths), exactly the syntax of
``dvc exp run -S``. An unknown key or a value of the wrong type fails with the full key path.

- **Closed choices** are declared on their field (:func:`choice`): :func:`load_config` checks them, and
  :func:`choices` hands them to argparse (``--backend``), the verl reward function and the scorer, so a
  value set is written once.
- **Names of pluggable parts** (:func:`named`: an encoder, parser, judge, captioner, metric) are the names
  their registry holds (:mod:`cim.plugins`, third-party plugins included); a stage checks the keys it uses
  with :func:`check_names` before it does any work, importing only the registries it needs.
- **The schema** (the sections and their fields) is :mod:`cim.config.schema`; this module loads and checks.
- **Layers**, last wins: the schema's defaults -> the params file -> the named protocol
  (``configs/protocols/<protocol>.yaml``, :mod:`cim.protocols`) -> the ``key=value`` overrides.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cim.config.schema import (AuditConfig, Config, EncodersConfig, EvalCaptionerConfig, EvalConfig,
                               EvalJudgeConfig, EvalParserConfig, ImageEncoderConfig, IndexConfig, LocalTrainConfig,
                               PipelineConfig, RewardConfig, RewardServiceConfig, TextEncoderConfig, TrackingConfig,
                               TrainConfig, VerifyConfig, VerlTrainConfig, WorldConfig)
from cim.errors import ConfigError, describe_decode_error, describe_yaml_error
from cim.protocols import load_protocol

__all__ = ["Config", "ConfigError", "load_config", "with_overrides", "to_dict", "flatten", "choices", "check_names",
           "path_keys", "name_keys",
           # the sections (cim.config.schema)
           "AuditConfig", "EncodersConfig", "EvalCaptionerConfig", "EvalConfig", "EvalJudgeConfig",
           "EvalParserConfig", "ImageEncoderConfig", "IndexConfig", "LocalTrainConfig", "PipelineConfig",
           "RewardConfig", "RewardServiceConfig", "TextEncoderConfig", "TrackingConfig", "TrainConfig",
           "VerifyConfig", "VerlTrainConfig", "WorldConfig"]


def _fields(schema: type = None, prefix: str = ""):
    """``(dotted key, dataclass field)`` for every leaf field of the schema."""
    for f in dataclasses.fields(schema or Config):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from _fields(type(default), key + ".")
        else:
            yield key, f


def choices(key: str) -> tuple[str, ...]:
    """The allowed values of the closed-choice field ``key`` (``train.backend`` -> ``("local", "verl")``)."""
    for name, f in _fields():
        if name == key and "choices" in f.metadata:
            return f.metadata["choices"]
    raise KeyError(f"{key} is not a closed-choice field of the schema")


def path_keys(or_name: bool = True) -> list[str]:
    """Every key that holds a path (with ``or_name``, also those holding a hub name or a path)."""
    return [key for key, f in _fields() if f.metadata.get("path") is True
            or (or_name and f.metadata.get("path") == "or-name")]


def name_keys() -> dict[str, str]:
    """``{dotted key: registry name}`` of every field that names a pluggable part."""
    return {key: f.metadata["registry"] for key, f in _fields() if "registry" in f.metadata}


def check_names(cfg, *keys: str) -> None:
    """Every name ``cfg`` gives under ``keys`` (default: all such keys) is in its registry, else an
    :class:`~cim.registry.UnknownName` (a ConfigError) listing the known ones. Imports the registries' modules."""
    from cim import plugins

    for key, registry in name_keys().items():
        if keys and key not in keys:
            continue
        value = OmegaConf.select(cfg, key)
        reg = getattr(plugins, registry)
        for name in (list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]):
            reg.get(name)


def _check_choices(cfg: DictConfig) -> None:
    for key, f in _fields():
        allowed = f.metadata.get("choices")
        if allowed and OmegaConf.select(cfg, key) not in allowed:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is not one of {', '.join(allowed)}")
    if cfg.reward.top_k < 1:
        raise ConfigError(f"reward.top_k must be >= 1, got {cfg.reward.top_k}")
    if not 0.0 < cfg.reward.decay <= 1.0:
        raise ConfigError(f"reward.decay must be in (0, 1], got {cfg.reward.decay}")
    _check_guards(cfg)


def _check_guards(cfg: DictConfig) -> None:
    """``reward.guards``: registered names (one line listing them), none twice, each weight a finite number
    >= 0 (a guard's other settings are checked where it is built, :func:`cim.reward.guards.check_guards`,
    still before any model loads)."""
    names = list(cfg.reward.guards or [])
    if not names:
        return
    if len(set(names)) != len(names):
        raise ConfigError(f"reward.guards names a guard twice: {', '.join(names)}")
    check_names(cfg, "reward.guards")
    for name in names:
        weight = (cfg.reward.guard.get(name) or {}).get("weight", 1.0)
        try:
            ok = math.isfinite(float(weight)) and float(weight) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"reward.guard.{name}.weight must be a finite number >= 0, got {weight}")


def load_config(path: str | Path | None = "params.yaml", overrides: Sequence[str] = ()) -> Config:
    """Load the params file ``path`` over the defaults, then apply ``key=value`` overrides.

    ``path=None`` means the built-in defaults alone. A ``path`` that does not exist, is a folder, is not UTF-8
    or not YAML is a ConfigError naming the file (`cim` uses the defaults only when no ``--params`` was given
    and the working folder has no params.yaml, and says so). Returns an omegaconf-backed object typed as
    :class:`Config` (attribute access, type-checked on write).
    """
    cfg = OmegaConf.structured(Config)
    try:
        if path is not None:
            cfg = _replacing(cfg, _read_params_file(Path(path)))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
        cfg = _with_protocol(cfg, overrides)   # the named protocol: between the file and the overrides
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:  # unknown key, wrong type: the message names the full key
        key = getattr(exc, "full_key", None)
        message = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]  # omegaconf appends its context
        raise ConfigError(f"{key}: {message}" if key else message) from None
    _check_choices(cfg)
    return cfg  # type: ignore[return-value]


def _replacing(cfg: DictConfig, layer: DictConfig) -> DictConfig:
    """``layer`` merged over ``cfg``, except that a mapping the schema marks ``replace`` (:func:`~cim.config.
    schema.replaced`: ``pipeline.variants``) is the layer's own when the layer gives one."""
    out = OmegaConf.merge(cfg, layer)
    for key, f in _fields():
        if f.metadata.get("replace") and OmegaConf.select(layer, key) is not None:
            OmegaConf.update(out, key, OmegaConf.select(layer, key), merge=False)
    return out


def with_overrides(cfg: Config, overrides: dict[str, Any] | Sequence[str]) -> Config:
    """A copy of ``cfg`` with ``{key: value}`` or ``["key=value"]`` applied, checked like :func:`load_config`.
    An override ``protocol`` naming another protocol than ``cfg``'s applies that protocol's params first (under
    the other overrides, as in :func:`load_config`; over ``cfg``, so keys it does not set keep ``cfg``'s values)."""
    items = overrides.items() if isinstance(overrides, dict) else \
        [tuple(i.split("=", 1)) for i in overrides if "=" in i]
    named_ = [str(v).strip() for k, v in items if str(k).strip() == "protocol"]
    if named_ and named_[-1] != (cfg.protocol or ""):
        cfg = _with_protocol(OmegaConf.merge(cfg, {"protocol": named_[-1]}), ())
    try:
        if isinstance(overrides, dict):
            out = OmegaConf.merge(cfg, {})
            for key, value in overrides.items():
                OmegaConf.update(out, str(key), value, merge=True)
        else:
            out = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]) from None
    _check_choices(out)
    return out  # type: ignore[return-value]


def _with_protocol(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``cfg`` with the protocol named by the last ``protocol=`` override, else by ``cfg.protocol``, merged
    over it as a layer (its ``params`` plus ``protocol: name``), checked against the schema."""
    name = cfg.protocol
    for item in overrides:
        if item.split("=", 1)[0].strip() == "protocol":
            name = item.split("=", 1)[1].strip()
    if not name:
        return cfg
    proto = load_protocol(name)
    conf = OmegaConf.create({**_nested(proto.params), "protocol": name})
    try:
        OmegaConf.merge(OmegaConf.structured(Config), conf)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"protocol {name!r} ({proto.path}): {key}: "
                          f"{str(getattr(exc, 'msg', exc)).splitlines()[0]}") from None
    return OmegaConf.merge(cfg, conf)


def _nested(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = str(key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _read_params_file(path: Path) -> DictConfig:
    if path.is_dir():
        raise ConfigError(f"params file {path} is a folder; pass a YAML file with --params")
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist; pass an existing file with --params")
    try:
        data = OmegaConf.load(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"params file {path} is {describe_decode_error(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {path} is not valid YAML ({describe_yaml_error(exc, with_file=False)}); "
                          "fix the file or pass another with --params") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"params file {path} holds a list; it must map section names to settings "
                          "(world:, index:, reward:, ...)")
    return data


def to_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"reward.beta": 1.0, ...}`` for logging as MLflow params."""
    out: dict[str, Any] = {}
    data = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=name + "."))
        else:
            out[name] = value
    return out
