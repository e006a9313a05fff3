"""verl model presets by name: ``configs/train/<preset>.yaml`` (model, parallelism, micro-batches, the
``settings.<base|sft>`` blocks). Data, like protocols and benchmarks: read by the verl launcher
(:mod:`cim.train.verl.launch`) and by the released checkpoints (their base model, :mod:`cim.eval.released`)."""
from __future__ import annotations

from pathlib import Path

from cim.errors import CimError
from cim.io import named_yaml, yaml_names

__all__ = ["PRESET_DIR", "PresetError", "preset_path", "list_presets", "load_preset"]

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "train"


class PresetError(CimError, ValueError):
    pass


def preset_path(name: str) -> Path:
    return named_yaml(name, PRESET_DIR, "train preset", PresetError)


def list_presets() -> list[str]:
    return yaml_names(PRESET_DIR)


def load_preset(name: str) -> dict:
    import yaml

    data = yaml.safe_load(preset_path(name).read_text()) or {}
    for key in ("model", "overrides"):
        if key not in data:
            raise PresetError(f"preset {name!r} has no {key!r}")
    return data
