"""The training measurement of the components ablation: one captioner per reward variant, the pipeline's way.

The pipeline's own calls (:mod:`cim.pipeline`): the SFT start once (``train_sft``), GRPO from it per variant
(``train_variant``, the ``pipeline.variants`` row whose reward equals the variant's), captions of the
benchmark ``pipeline.benchmark`` by each (``caption``), and the table (``compare``), all under
``<work>/train/`` (resumable: a rerun continues from the newest checkpoints). A row gets the table's
ground-truth recall of the world's objects, attributes and relations and its change against the SFT start.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cim.config import load_config, to_dict
from cim.errors import ConfigError

__all__ = ["training_rows", "TRAINING_KEYS"]

# columns of the pipeline's table kept in the ablation's row (as train.<key> and train.delta_<key>)
TRAINING_KEYS = ("gt_object_recall", "gt_attribute_recall", "gt_attribute_precision", "gt_relation_recall")


def _pipeline_row(vcfg, pipeline_variants, variant_config) -> str:
    """The ``pipeline.variants`` row whose reward settings equal the variant's."""
    want = to_dict(vcfg.reward)
    for name in pipeline_variants(vcfg):
        if name != vcfg.pipeline.sft and to_dict(variant_config(vcfg, name).reward) == want:
            return name
    raise ConfigError(f"no pipeline.variants row trains with reward.mode={vcfg.reward.mode} "
                      f"reward.beta={vcfg.reward.beta}; add one to params.yaml's pipeline.variants")


def training_rows(params, overrides: Sequence[str], variants, cfgs, work: Path,
                  progress: bool = True) -> tuple[dict[str, dict], str]:
    """``({variant: {column: value}}, how it was measured)``."""
    from cim.pipeline import caption, compare, train_sft, train_variant, variant_config
    from cim.pipeline import variants as pipeline_variants

    cfg = load_config(params, overrides)
    root, sft, bench = Path(work) / "train", cfg.pipeline.sft, cfg.pipeline.benchmark
    rows = {v.name: _pipeline_row(vcfg, pipeline_variants, variant_config) for v, vcfg in zip(variants, cfgs)}
    sft_dir = train_sft(cfg, root / "checkpoints" / sft, report_dir=root / "reports" / sft, progress=progress)
    captions = {sft: caption(cfg, sft, bench, root / "captions" / sft / "captions.jsonl", checkpoint=sft_dir,
                             progress=progress)}
    for v, vcfg in zip(variants, cfgs):
        name = rows[v.name]
        out = train_variant(vcfg, name, sft_dir, root / "checkpoints" / name, report_dir=root / "reports" / name,
                            progress=progress)
        captions[v.name] = caption(vcfg, name, bench, root / "captions" / name / "captions.jsonl", checkpoint=out,
                                   progress=progress)
    table = compare(cfg, captions, bench, sft, root / "results")
    found = {r["captioner"]: r for r in table["rows"]}
    out_rows = {}
    for v in variants:
        r = found[v.name]
        out_rows[v.name] = {**{f"train.{k}": r[k] for k in TRAINING_KEYS if k in r},
                            **{f"train.delta_{k}": r[f"delta_{k}"] for k in TRAINING_KEYS if f"delta_{k}" in r}}
    how = (f"cim.pipeline: train_sft once, train_variant per variant ({', '.join(rows.values())}), caption, compare "
           f"on {bench}; deltas against {sft}")
    return out_rows, how
