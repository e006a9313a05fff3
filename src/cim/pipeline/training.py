"""Training the comparison's captioners with the local backend (:func:`cim.train.local.run_local`): the SFT
start once (``grpo_steps=0``), then each GRPO variant from it (``train.local.sft_dir``), each in its own
checkpoint and report folder and its own MLflow run. A killed run resumes from its newest checkpoint."""
from __future__ import annotations

from pathlib import Path

from cim.config import with_overrides
from cim.pipeline.variants import run_name, variant_config


def _report_dir(cfg, name: str, report_dir) -> str:
    return str(report_dir if report_dir is not None else Path(cfg.pipeline.report_dir) / name)


def train_sft(cfg, out_dir: str | Path, report_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The SFT start (no GRPO) in ``out_dir``: ``sft_final/``, ``tokenizer.json``, reports; returns ``out_dir``."""
    from cim.train.local import run_local

    name = cfg.pipeline.sft
    run_cfg = with_overrides(cfg, {"train.local.out_dir": str(out_dir), "train.local.sft_dir": "",
                                   "train.local.grpo_steps": 0,
                                   "train.local.report_dir": _report_dir(cfg, name, report_dir)})
    run_local(run_cfg, progress=progress, run_name=run_name(cfg, "train", name))
    return Path(out_dir)


def train_variant(cfg, name: str, sft_dir: str | Path, out_dir: str | Path, report_dir: str | Path | None = None,
                  progress: bool = True) -> Path:
    """GRPO from the SFT start in ``sft_dir`` with the variant's overrides, into ``out_dir``; returns it.
    The SFT start's own name returns ``sft_dir`` (nothing to train)."""
    from cim.train.local import run_local

    if name == cfg.pipeline.sft:
        return Path(sft_dir)
    run_cfg = with_overrides(variant_config(cfg, name), {
        "train.local.out_dir": str(out_dir), "train.local.sft_dir": str(sft_dir),
        "train.local.report_dir": _report_dir(cfg, name, report_dir)})
    run_local(run_cfg, progress=progress, run_name=run_name(cfg, "train", name))
    return Path(out_dir)
