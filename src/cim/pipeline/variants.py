"""The captioners of the comparison and their runs: the SFT start (``pipeline.sft``, no GRPO, one run) and
the GRPO variants (``pipeline.variants``: name -> config overrides, e.g. ``cim-grc: {reward.mode: grc}``; an
override ``protocol: guarded`` applies that protocol's params, :func:`cim.config.with_overrides`, and the row's
runs record it like any protocol run), each trained from that one SFT start with every seed of
``pipeline.seeds`` (``train.local.grpo_seed``: the paper compares from a fixed base, so seeds vary GRPO, not
the start).

A run is named ``<variant>-s<seed>`` (``cim-grc-s1``; the SFT start: ``sft``) and lives in
``<pipeline.checkpoint_dir>/<run>``, ``<pipeline.report_dir>/<run>`` and ``<pipeline.captions_dir>/<run>/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cim.errors import ConfigError

__all__ = ["variants", "variant_config", "runs", "run_of", "checkpoint_dir", "captions_path", "run_name"]


def variants(cfg) -> dict[str, dict[str, Any]]:
    """``{name: overrides}`` in table order: the SFT start first (no overrides), then the GRPO variants."""
    out: dict[str, dict[str, Any]] = {cfg.pipeline.sft: {}}
    for name, overrides in cfg.pipeline.variants.items():
        if name == cfg.pipeline.sft:
            raise ConfigError(f"pipeline.variants.{name}: the name of the SFT start (pipeline.sft) is taken")
        out[str(name)] = dict(overrides or {})
    return out


def runs(cfg) -> dict[str, list[str]]:
    """``{row: [its runs]}``: ``{"sft": ["sft"], "cim": ["cim-s0", "cim-s1", "cim-s2"], ...}``."""
    seeds = [int(s) for s in cfg.pipeline.seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"pipeline.seeds must be distinct seeds, at least one; got {seeds}")
    return {name: [name] if name == cfg.pipeline.sft else [f"{name}-s{s}" for s in seeds] for name in variants(cfg)}


def run_of(cfg, name: str, seed: int | None) -> str:
    """The run of row ``name`` with GRPO seed ``seed`` (None for the SFT start)."""
    return name if name == cfg.pipeline.sft else f"{name}-s{int(seed)}"


def checkpoint_dir(cfg, run: str) -> Path:
    return Path(cfg.pipeline.checkpoint_dir) / run


def captions_path(cfg, run: str) -> Path:
    """Where the comparison keeps a run's captions: ``<pipeline.captions_dir>/<run>/captions.jsonl``."""
    return Path(cfg.pipeline.captions_dir) / run / "captions.jsonl"


def variant_config(cfg, name: str, seed: int | None = None):
    """``cfg`` with the variant's overrides (and GRPO seed) applied (ConfigError for an unknown variant or a
    bad override)."""
    from cim.config import with_overrides

    known = variants(cfg)
    if name not in known:
        raise ConfigError(f"captioner {name!r} is not one of the pipeline's: {', '.join(known)} "
                          "(pipeline.sft, pipeline.variants)")
    overrides = dict(known[name])
    if seed is not None:
        overrides["train.local.grpo_seed"] = int(seed)
    return with_overrides(cfg, overrides)


def run_name(cfg, stage: str, name: str, seed: int | None = None) -> str:
    """What differs, as MLflow run names: ``train[sft]``, ``train[mode=grc,seed=1]``, ``caption[cim-grc-s1]``."""
    if stage != "train" or name == cfg.pipeline.sft:
        return f"{stage}[{name}]"
    overrides = variants(cfg)[name]
    what = ",".join(f"{str(k).rsplit('.', 1)[-1]}={v}" for k, v in overrides.items()) or name
    return f"{stage}[{what}" + (f",seed={int(seed)}]" if seed is not None else "]")
