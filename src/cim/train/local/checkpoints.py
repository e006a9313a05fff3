"""Checkpoints of the local backend: ``<out_dir>/<name>/state.pt`` written as a whole folder or not at all
(:func:`cim.io.atomic_dir`), ``latest.json`` pointing at the newest one.

A checkpoint holds everything a resumed run needs to continue exactly where the killed one was: model,
optimizer, the RNG states, phase and step, and the run's metric history (so its reports equal an
uninterrupted run's). It holds nothing that differs between two runs of the same configuration (no run id,
no timestamp, no absolute path): the checkpoint folder is a DVC output and must be byte-identical.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from cim.io import atomic_dir, atomic_write_json

STATE_FILE = "state.pt"
LATEST_FILE = "latest.json"
SFT_FINAL = "sft_final"
# settings that may change between a run and its resumption without changing what was computed so far
RESUMABLE_SETTINGS = ("save_every", "eval_every", "n_eval", "threads", "grpo_steps", "sft_steps", "out_dir",
                      "report_dir", "sft_dir")
# what an SFT start depends on: GRPO from another folder's SFT start needs these to match
SFT_SETTINGS = ("lm", "sft_data", "d_model", "n_layers", "n_heads", "n_prefix", "sft_lr", "sft_batch",
                "max_new_tokens")


def grpo_name(step: int) -> str:
    return f"grpo_{step:05d}"


def canonical(obj: Any) -> Any:
    """A copy of ``obj`` whose pickle depends only on its values: fresh containers, interned strings.

    Pickle memoises objects by identity, so the same values pickle to other bytes when strings or containers
    are shared differently -- e.g. an optimizer state loaded from a checkpoint (its ``"step"`` keys are
    unpickled strings) versus one built in memory (the interned literal). Tensors are kept as they are.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(canonical(v) for v in obj)
    return obj


def save_checkpoint(out: Path, name: str, state: dict) -> Path:
    """``out/name/state.pt`` (fsynced, the folder renamed into place), then ``latest.json`` points at it.
    The bytes depend only on the state's values (:func:`canonical`; the archive's inner name is fixed)."""
    with atomic_dir(out / name) as tmp:
        with open(tmp / STATE_FILE, "wb") as handle:
            torch.save(canonical(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
    atomic_write_json(out / LATEST_FILE, {"checkpoint": name, "phase": state["phase"], "step": state["step"]})
    return out / name


def load_checkpoint(out: Path, name: str) -> dict:
    return torch.load(out / name / STATE_FILE, weights_only=False)


def load_latest(out: Path) -> Optional[dict]:
    """The newest checkpoint's state, or None when ``out`` holds none."""
    latest = out / LATEST_FILE
    if not latest.exists():
        return None
    return load_checkpoint(out, json.loads(latest.read_text(encoding="utf-8"))["checkpoint"])


def config_fingerprint(cfg) -> dict:
    """What a checkpoint's numbers depend on: a folder holding another fingerprint is not resumed."""
    from cim.config import to_dict

    lc = to_dict(cfg.train.local)
    lc.update(to_dict(cfg.train.grpo))   # train.grpo's keys were train.local's: old checkpoints stay resumable
    for k in RESUMABLE_SETTINGS:
        lc.pop(k, None)
    return {"local": lc, "reward": to_dict(cfg.reward), "index": cfg.index.out_dir, "seed": cfg.seed}


def sft_compatible(state: dict, cfg) -> bool:
    """Whether ``state`` (an ``sft_final`` checkpoint) is an SFT start for ``cfg``'s GRPO: same model, SFT
    settings, steps, index and seed (the reward and GRPO settings may differ)."""
    mine, theirs = config_fingerprint(cfg), state.get("fingerprint") or {}
    same = {k: mine["local"].get(k) for k in SFT_SETTINGS} == {k: theirs.get("local", {}).get(k) for k in SFT_SETTINGS}
    return same and state.get("step") == cfg.train.local.sft_steps and \
        (mine["index"], mine["seed"]) == (theirs.get("index"), theirs.get("seed"))
