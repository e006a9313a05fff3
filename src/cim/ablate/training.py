"""The training measurement of the components ablation: one captioner per reward variant.

Each variant trains with the local CPU backend (:func:`cim.train.local.run.run_local`, SFT warm-up then
GRPO with the variant's ``reward.mode``) in its own checkpoint folder under ``<work>/train/<variant>/``
(resumable: a rerun continues from the newest checkpoint), and its row holds the final held-out evaluation
the backend reports: recall of the world's ground-truth objects, attributes and relations, attribute
precision, and the reward terms.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from cim.config import load_config

__all__ = ["training_rows", "TRAINING_KEYS"]

# final_eval key of the backend's summary -> column of the ablation's row
TRAINING_KEYS = {"eval/object_recall": "train.object_recall", "eval/attribute_recall": "train.attribute_recall",
                 "eval/relation_recall": "train.relation_recall",
                 "eval/attribute_precision": "train.attribute_precision", "eval/grc": "train.grc",
                 "eval/qir": "train.qir"}


def training_rows(params, overrides: Sequence[str], variants, cfgs, work: Path,
                  progress: bool = True) -> tuple[dict[str, dict], str]:
    """``({variant: {column: value}}, how it was measured)``."""
    from cim.ablate.shared import slug
    from cim.train.local.run import run_local

    rows = {}
    for v in variants:
        out = work / "train" / slug(v.name)
        vcfg = load_config(params, [*overrides, *v.overrides, f"train.local.out_dir={out}",
                                    "train.local.report_dir="])
        run_local(vcfg, progress=progress)
        final = json.loads((out / "summary.json").read_text())["final_eval"]
        rows[v.name] = {col: float(final[key]) for key, col in TRAINING_KEYS.items() if key in final}
    return rows, "cim.train.local.run.run_local per variant (SFT + GRPO each), final held-out evaluation"
