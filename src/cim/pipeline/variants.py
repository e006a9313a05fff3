"""The captioners of the comparison: the SFT start (``pipeline.sft``, no GRPO) and the GRPO variants
(``pipeline.variants``: name -> config overrides, e.g. ``cim-grc: {reward.mode: grc}``), each trained from
that one SFT start into its own ``<pipeline.checkpoint_dir>/<name>`` and ``<pipeline.report_dir>/<name>``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cim.errors import ConfigError


def variants(cfg) -> dict[str, dict[str, Any]]:
    """``{name: overrides}`` in table order: the SFT start first (no overrides), then the GRPO variants."""
    out: dict[str, dict[str, Any]] = {cfg.pipeline.sft: {}}
    for name, overrides in cfg.pipeline.variants.items():
        if name == cfg.pipeline.sft:
            raise ConfigError(f"pipeline.variants.{name}: the name of the SFT start (pipeline.sft) is taken")
        out[str(name)] = dict(overrides or {})
    return out


def checkpoint_dir(cfg, name: str) -> Path:
    return Path(cfg.pipeline.checkpoint_dir) / name


def variant_config(cfg, name: str):
    """``cfg`` with the variant's overrides applied (ConfigError for an unknown variant or a bad override)."""
    from cim.config import with_overrides

    known = variants(cfg)
    if name not in known:
        raise ConfigError(f"captioner {name!r} is not one of the pipeline's: {', '.join(known)} "
                          "(pipeline.sft, pipeline.variants)")
    return with_overrides(cfg, known[name])


def run_name(cfg, stage: str, name: str) -> str:
    """What differs, as MLflow run names: ``train[sft]``, ``train[mode=grc]``, ``caption[cim-grc]``."""
    if stage != "train" or name == cfg.pipeline.sft:
        return f"{stage}[{name}]"
    overrides = variants(cfg)[name]
    what = ",".join(f"{str(k).rsplit('.', 1)[-1]}={v}" for k, v in overrides.items()) or name
    return f"{stage}[{what}]"
