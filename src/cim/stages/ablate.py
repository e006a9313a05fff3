"""The ``ablate`` stage (``cim ablate AXIS``): every variant of an axis (:mod:`cim.ablate.axes`) as a child
MLflow run of one parent, one report per axis (:mod:`cim.ablate.report`).

Measurement ``quality_order`` (every axis, cheap, no training): the verify stage over the demo world's
captions of known quality (:func:`cim.eval.quality_order.verify_report`, the verify stage's body), with the
variant's reward over the variant's corpus index (:mod:`cim.ablate.shared`); a row holds, for the reward Υ,
GRC and QIR each, the pooled Spearman ρ with quality, the per-image ρ and the mean per quality level.
Measurement ``training`` (``components`` with ``train``, a runner of steps): the pipeline's run plan
(:func:`cim.pipeline.plan.plan`) restricted to the variants' rows -- the SFT start once, GRPO from it per
variant and seed, captions of ``pipeline.benchmark``, the comparison -- with its folders under
``<work>/train/``, run by ``train`` (the entry point's runner: a stage calls no other stage); a row gets the
table's ground-truth recall of the world's objects, attributes and relations and its change against the SFT
start.

Measurement ``pipeline`` (the ``aggregate`` axis, its only one: :data:`cim.ablate.axes.FROM_PIPELINE`): the
rows the pipeline already trained, read from its table and its runs' reward curves (:mod:`cim.ablate.
from_pipeline`; no training, no index): the aggregation does not change the reward's value, so the quality
order has nothing to tell, and the pipeline trains these rows anyway.

Resuming: each variant's verify report and a key (a hash of its reward settings, encoders, index and
captions) are kept in ``<work>/<axis>/<variant>/``; a rerun reuses the reports whose key matches, so a killed
ablation loses at most the variant it was in and writes the same report as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from cim.ablate.axes import FROM_PIPELINE, variants as axis_variants
from cim.ablate.shared import Shared, fingerprint, slug
from cim.config import load_config, to_dict
from cim.errors import ConfigError
from cim.io import atomic_write_json, read_jsonl

__all__ = ["ablate", "quality_row", "training_rows", "pipeline_row", "pipeline_inputs", "TRAINING_KEYS"]

# columns of the pipeline's table kept in the ablation's row (as train.<key> and train.delta_<key>)
TRAINING_KEYS = ("gt_object_recall", "gt_attribute_recall", "gt_attribute_precision", "gt_relation_recall")

ROUND = 6          # digits kept in the committed report

# runs a list of run-plan steps: runner(cfg, steps, progress=) -> {step name: what its stage returned}
Runner = Callable[..., dict[str, Any]]


def quality_row(summary: dict) -> dict:
    """The numbers of one verify summary, flat: ``score.rho``, ``grc.rho_per_image``, ``qir.mean.wrong`` ..."""
    from cim.eval.quality_order import METRICS

    row = {}
    for m in METRICS:
        s = summary[m]
        row[f"{m}.rho"] = s["spearman_pooled"]
        row[f"{m}.rho_per_image"] = s["spearman_per_image_mean"]
        row.update({f"{m}.mean.{lvl}": v for lvl, v in s["mean_by_level"].items()})
    return row


def _variant_key(vcfg, shared: Shared, index, captions: Path) -> str:
    fields = {"reward": to_dict(vcfg.reward), "encoders": shared.sides(vcfg), "index": fingerprint(index),
              "captions": hashlib.sha256(captions.read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _measure(vcfg, shared: Shared, index, captions: Path, vdir: Path, progress: bool) -> tuple[dict, bool]:
    """(the verify summary, whether it was reused from an earlier run of this variant)."""
    from cim.eval.quality_order import verify_report
    from cim.reward.scorer import Scorer
    from cim.reward.settings import reward_settings

    key = _variant_key(vcfg, shared, index, captions)
    done = vdir / "key.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key and (vdir / "metrics.json").is_file():
        return json.loads((vdir / "metrics.json").read_text()), True
    scorer = Scorer(index, shared.text_encoder(vcfg), None, **reward_settings(vcfg.reward))
    summary = verify_report(vcfg, scorer, captions, vdir, progress=progress)
    atomic_write_json(done, {"key": key})          # last: the folder counts as done only now
    return summary, False


def ablate(params: str | None, overrides: Sequence[str], axis: str, values: Sequence[str] | None = None, *,
           out_dir: str | Path | None = None, work_dir: str | Path | None = None,
           captions: str | Path | None = None, train: Runner | None = None, progress: bool = True) -> dict:
    """Run ``axis`` over its variants (``values``: :func:`cim.ablate.axes.defaults`), write
    ``<out_dir>/<axis>.json|md|png`` and return the report (``out_dir``, ``work_dir``: ``ablate.*``'s by
    default). ``overrides`` apply to the base config and so to every variant (the variant's own overrides come
    last). ``train``: also measure training, running the plan's steps with this runner (``cim ablate --train``:
    :func:`cim.stages.run_steps`)."""
    import mlflow
    from tqdm.auto import tqdm

    from cim.ablate.report import write_report
    from cim.eval.quality_order import log_summary
    from cim.tracking import client, parent_run, start_run

    cfg = load_config(params, overrides)
    out_dir, work_dir = out_dir or cfg.ablate.out_dir, work_dir or cfg.ablate.work_dir
    found = axis_variants(cfg, axis, values)
    cfgs = [load_config(params, [*overrides, *v.overrides]) for v in found]
    if axis in FROM_PIPELINE:
        if train is not None:
            raise ConfigError(f"{axis} is measured on the pipeline's trained rows: it trains nothing itself")
        return _from_pipeline(cfg, axis, found, cfgs, Path(out_dir))
    captions = Path(captions or Path(cfg.world.out_dir) / "bench_captions.jsonl")
    work = Path(work_dir) / axis
    shared = Shared(cfg, Path(work_dir), progress=progress)
    shared.prepare(cfgs)                              # every encoder built, every missing index built, first
    train_ids = [r["id"] for _, r in read_jsonl(cfg.train.manifest)] if axis == "scale" else []
    shares = [v.corpus for v in found if v.corpus is not None]
    rows = []
    with parent_run(cfg, "ablate", f"ablate[{axis}]", tags={"ablate.axis": axis}) as parent_id:
        for v, vcfg in tqdm(list(zip(found, cfgs)), desc=f"ablate {axis}", unit="variant", disable=not progress):
            index = shared.subset(vcfg, v.corpus, train_ids, int(cfg.seed), shares)
            vdir = work / slug(v.name)
            with start_run(vcfg, "ablate-variant", run_name=f"{axis}[{v.name}]",
                           tags={"ablate.axis": axis, "ablate.variant": v.name,
                                 "ablate.overrides": " ".join(v.overrides)}):
                summary, reused = _measure(vcfg, shared, index, captions, vdir, progress)
                log_summary(summary, vdir)
                mlflow.log_metric("corpus_rows", len(index.ids))
                mlflow.set_tag("ablate.reused", str(reused).lower())
            rows.append({"variant": v.name, **v.fields, **({"share": v.corpus} if v.corpus is not None else {}),
                         "corpus_rows": len(index.ids), **quality_row(summary)})
        measurement = ["quality_order"]
        c = client(cfg)
        if train is not None:
            measurement.append("training")
            trained, how = training_rows(cfg, found, cfgs, Path(work_dir), train, progress=progress)
            for row in rows:
                row.update(trained.get(row["variant"], {}))
            c.set_tag(parent_id, "ablate.training", how)
        report = {"axis": axis, "measurement": measurement,
                  "rows": [{k: (round(val, ROUND) if isinstance(val, float) else val) for k, val in r.items()}
                           for r in rows]}
        for path in write_report(report, found, Path(out_dir)):
            c.log_artifact(parent_id, str(path), artifact_path="ablation")
        c.set_tag(parent_id, "ablate.variants", str(len(rows)))
    return {**report, "run_id": parent_id}


def _from_pipeline(cfg, axis: str, found, cfgs, out_dir: Path) -> dict:
    """The ``pipeline`` measurement (the module doc): rows from the pipeline's table and curves, one MLflow
    parent run with a child run per variant (its numbers), the report's files."""
    import mlflow

    from cim.ablate import from_pipeline
    from cim.ablate.report import write_report
    from cim.tracking import client, parent_run, start_run

    names = {v.name: pipeline_row(cfg, vcfg, " ".join(v.overrides)) for v, vcfg in zip(found, cfgs)}
    table, *_ = pipeline_inputs(cfg, [])
    curves = {row: [Path(p) for p in pipeline_inputs(cfg, [row])[1:]] for row in names.values()}
    rows, how = from_pipeline.rows(found, names, curves, Path(table), cfg.pipeline.seeds)
    report = {"axis": axis, "measurement": ["pipeline"], "how": how,
              "rows": [{k: _rounded(val) for k, val in r.items()} for r in rows]}
    with parent_run(cfg, "ablate", f"ablate[{axis}]", tags={"ablate.axis": axis}) as parent_id:
        for v, vcfg, row in zip(found, cfgs, report["rows"]):
            with start_run(vcfg, "ablate-variant", run_name=f"{axis}[{v.name}]",
                           tags={"ablate.axis": axis, "ablate.variant": v.name, "ablate.row": row["row"],
                                 "ablate.overrides": " ".join(v.overrides)}):
                mlflow.log_metrics({k: float(val) for k, val in row.items() if isinstance(val, (int, float))
                                    and not isinstance(val, bool) and val == val})
        c = client(cfg)
        c.set_tag(parent_id, "ablate.training", how)
        for path in write_report(report, found, out_dir):
            c.log_artifact(parent_id, str(path), artifact_path="ablation")
        c.set_tag(parent_id, "ablate.variants", str(len(rows)))
    return {**report, "run_id": parent_id}


def pipeline_row(cfg, vcfg, what: str = "") -> str:
    """The ``pipeline.variants`` row of ``cfg`` (the base configuration) that trains with ``vcfg``'s reward
    settings (a variant's: ``cfg`` with its overrides); ConfigError naming ``what``, the variant's overrides,
    when none does. Each row is taken over ``cfg``, not ``vcfg``: a row that leaves the varied key alone trains
    with the base's value of it."""
    from cim.pipeline.variants import variant_config, variants

    want = to_dict(vcfg.reward)
    for name in variants(cfg):
        if name != cfg.pipeline.sft and to_dict(variant_config(cfg, name).reward) == want:
            return name
    raise ConfigError(f"no pipeline.variants row trains with the reward of {what or 'this variant'} "
                      f"(reward.mode={vcfg.reward.mode}, reward.beta={vcfg.reward.beta}, "
                      f"reward.aggregate={vcfg.reward.aggregate}); add one to params.yaml's pipeline.variants")


def pipeline_inputs(cfg, rows: Sequence[str]) -> list[str]:
    """What the ``pipeline`` measurement reads: the pipeline's table, then each of ``rows``' runs' curves.csv
    (dvc.yaml's ``ablate-aggregate`` deps; tests/pipeline/test_run_plan.py checks them)."""
    from cim.eval.results import COMPARISON_JSON
    from cim.pipeline.variants import runs

    table = Path(cfg.pipeline.out_dir) / COMPARISON_JSON
    every = runs(cfg)
    return [p.as_posix() for p in [table, *(Path(cfg.pipeline.report_dir) / run / "curves.csv"
                                            for row in rows for run in every[row])]]


def _rounded(value):
    if isinstance(value, float):
        return round(value, ROUND)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def training_rows(cfg, variants, cfgs, work: Path, runner: Runner,
                  progress: bool = True) -> tuple[dict[str, dict], str]:
    """``({variant: {column: value}}, how it was measured)``: the run plan of the variants' rows, its folders
    under ``<work>/train/`` (checkpoints, reports, captions, results) and deltas against the SFT start, run by
    ``runner(cfg, steps, progress=)`` (-> step name -> what its stage returned); no publish step."""
    from cim.config import with_overrides
    from cim.pipeline.plan import plan

    root = Path(work) / "train"
    rows = {v.name: pipeline_row(cfg, vcfg, " ".join(v.overrides)) for v, vcfg in zip(variants, cfgs)}
    wcfg = with_overrides(cfg, {"pipeline.checkpoint_dir": str(root / "checkpoints"),
                                "pipeline.report_dir": str(root / "reports"),
                                "pipeline.captions_dir": str(root / "captions"),
                                "pipeline.out_dir": str(root / "results"), "pipeline.baseline": cfg.pipeline.sft})
    steps = [s for s in plan(wcfg, rows=list(rows.values())) if s.stage != "publish"]
    found = {r["captioner"]: r for r in runner(wcfg, steps, progress=progress)["compare"]["rows"]}
    out_rows = {}
    for v in variants:
        r = found[rows[v.name]]
        out_rows[v.name] = {**{f"train.{k}": r[k] for k in TRAINING_KEYS if k in r},
                            **{f"train.delta_{k}": r[f"delta_{k}"] for k in TRAINING_KEYS if f"delta_{k}" in r}}
    how = (f"the pipeline's run plan: train_sft once, train_variant per variant ({', '.join(rows.values())}) and "
           f"seed ({', '.join(map(str, cfg.pipeline.seeds))}), caption, compare on {cfg.pipeline.benchmark}; means "
           f"over seeds, deltas against {cfg.pipeline.sft}")
    return out_rows, how
