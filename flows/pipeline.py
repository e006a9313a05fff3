"""Prefect flow `cim-pipeline`: world -> index -> audit -> SFT start -> GRPO variants x seeds -> captions -> the table
-> its publication in MLflow.

The same stage functions as the `cim` commands the DVC stages run (cim.stages), one task each, retried and
cached by their inputs (config sections, input files' contents, the cim code; never the run id), so a second
run with the same inputs reuses the first one's outputs. After the world, the index and the audit, the flow
runs the comparison's run plan (cim.pipeline.plan, the steps dvc.yaml's stages are): every GRPO variant with
every seed of `pipeline.seeds` from the one SFT start, a task per step; publish is never cached (it is
idempotent: the MLflow store is its record). Everything is written under runs/<flow-run>/ unless `--workspace`;
one MLflow parent run holds a child run per stage and variant. The run publishes a markdown artifact
(the table and the MLflow link) and returns the table {"benchmark", "baseline", "rows", ...}.

    python flows/pipeline.py                            # the embedded default (params.yaml)
    python flows/pipeline.py world.n_corpus=600 ...     # overrides, as `dvc exp run -S`
    prefect deployment run cim-pipeline/cim-pipeline    # on the cim-cpu pool (prefect.yaml)
"""
from __future__ import annotations

import argparse
import json

from prefect import flow, task

from cim.flows.common import (cached, config, inputs_key, publish, relocate, retry_unless_sentinel, run_dir,
                              run_overrides)
from cim.flows.tasks import CACHE, build_corpus_index, prepare_world

TRAIN = ("seed", "train", "reward", "encoders", "index", "world")


@task(retries=1, cache_key_fn=inputs_key("seed", "audit", "reward", "encoders", "index", "world"), **CACHE)
def audit_reward(params: str, overrides: list[str], index: str, world: str, out_dir: str) -> dict:
    """Does the reward carry signal on the corpus? (the audit stage: detail, precision, hacks; no labels)"""
    from cim.stages.audit import audit

    report = audit(config(params, overrides), index_dir=index, out_dir=out_dir, progress=False, write_pairs=False)
    return {"out_dir": out_dir, "verdicts": report["verdicts"], "warnings": report["warnings"]}


@task(retries=1, cache_key_fn=inputs_key(*TRAIN, "pipeline.sft"), **CACHE)
def train_sft(params: str, overrides: list[str], index: str, world: str, out_dir: str, out_report: str) -> str:
    """The SFT start (resumes from its newest checkpoint on a retry)."""
    from cim.stages.train import train_sft as run

    return str(run(config(params, overrides), out_dir, report_dir=out_report, progress=False))


@task(retries=1, retry_condition_fn=retry_unless_sentinel, cache_key_fn=inputs_key(*TRAIN, "pipeline.sft",
                                                                                  "pipeline.variants"), **CACHE)
def train_variant(params: str, overrides: list[str], name: str, seed: int, sft_dir: str, index: str, world: str,
                  out_dir: str, out_report: str) -> str:
    """GRPO from the SFT start with the variant's overrides and GRPO seed."""
    from cim.stages.train import train_variant as run

    return str(run(config(params, overrides), name, seed, sft_dir, out_dir, report_dir=out_report, progress=False))


@task(retries=1, cache_key_fn=inputs_key("seed", "eval", "train.local", "pipeline", "world"), **CACHE)
def caption(params: str, overrides: list[str], run: str, checkpoint: str, benchmark: str, world: str,
            out_path: str) -> str:
    """The run's captions of the benchmark (greedy, batched)."""
    from cim.stages.caption import caption as stage

    return str(stage(config(params, overrides), run, benchmark, out_path, checkpoint=checkpoint, progress=False))


@task(retries=1, cache_key_fn=inputs_key("seed", "eval", "encoders", "reward", "index", "pipeline", "world"), **CACHE)
def compare(params: str, overrides: list[str], captions: dict[str, list[str]], benchmark: str, baseline: str,
            n_boot: int, index: str, world: str, out_dir: str) -> dict:
    """Every row's metrics over its seeds, intervals and deltas against the baseline row: the table."""
    from cim.stages.compare import compare as stage

    return stage(config(params, overrides), captions, benchmark, baseline, out_dir, n_boot=n_boot)


@task(retries=1)
def publish_table(params: str, overrides: list[str], out_dir: str) -> dict:
    """The table into MLflow (the publish stage), unless the store holds it for this execution already."""
    from cim.stages.publish import publish as stage

    return stage(config(params, overrides), out_dir)


def run_step(step, args: dict, params: str, overrides: list[str], index: str, world: str):
    """The task of one step of the run plan (``args``: its arguments, bound to earlier steps' results)."""
    a = args
    if step.stage == "train_sft":
        return cached(train_sft, params, overrides, index, world, a["out_dir"], a["report_dir"])
    if step.stage == "train_variant":
        return cached(train_variant, params, overrides, a["name"], a["seed"], a["sft_dir"], index, world,
                      a["out_dir"], a["report_dir"])
    if step.stage == "caption":
        return cached(caption, params, overrides, a["captioner"], a["checkpoint"], a["benchmark"], world,
                      a["out_path"])
    if step.stage == "compare":
        return compare(params, overrides, a["captions"], a["benchmark"], a["baseline"], a["n_boot"], index, world,
                       a["out_dir"])
    if step.stage == "publish":
        return publish_table(params, overrides, a["out_dir"])
    raise ValueError(f"no task runs stage {step.stage!r} (step {step.name})")


@flow(name="cim-pipeline", log_prints=True, persist_result=True)
def cim_pipeline(params: str = "params.yaml", overrides: list[str] | None = None, protocol: str | None = None,
                 workspace: bool = False, mlflow_ui: str = "http://127.0.0.1:5000") -> dict:
    """``workspace``: write into the DVC workspace (default: runs/<flow-run>/). ``mlflow_ui``: where
    `mlflow ui` serves the store, for the artifact's link."""
    from cim.eval.results import comparison_markdown
    from cim.pipeline.plan import bind, plan
    from cim.protocols import with_protocol
    from cim.tracking import pipeline_parent

    overrides = with_protocol(protocol, overrides)
    folder = run_dir(workspace)
    overrides += run_overrides(config(params, overrides), folder,     # fails fast on a bad key
                               ["world", "index", "verify", "audit", "train", "eval", "pipeline"])
    parent = pipeline_parent(config(params, overrides))   # opened first: its duration covers the run

    world = cached(prepare_world, params, overrides)
    overrides += relocate(config(params, overrides), "world", world)   # a cache hit: an earlier run's world
    cfg = config(params, overrides)
    index = cached(build_corpus_index, params, overrides, cfg.index.manifest, cfg.index.sources, world)
    overrides += relocate(cfg, "index", index)
    cfg = config(params, overrides)
    audited = cached(audit_reward, params, overrides, index, world, cfg.audit.out_dir)
    print("\n".join(audited["verdicts"].values()))

    done: dict[str, str] = {}                   # a step's planned result -> the path its (cached) task returned
    results = {}
    for step in plan(cfg):
        results[step.name] = run_step(step, bind(step, done), params, overrides, index, world)
        if step.result is not None:
            done[step.result] = results[step.name]
    table = results["compare"]

    publish("cim-pipeline", "CIM captioners", comparison_markdown(table), cfg, parent, mlflow_ui, folder)
    print(comparison_markdown(table))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--protocol", help="a named protocol (configs/protocols/NAME.yaml)")
    p.add_argument("--workspace", action="store_true", help="write into the DVC workspace, not runs/<run>/")
    p.add_argument("--mlflow-ui", default="http://127.0.0.1:5000", help="the MLflow UI, for the artifact's link")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_intermixed_args(argv)
    print(json.dumps(cim_pipeline(a.params, a.overrides, a.protocol, a.workspace, a.mlflow_ui), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
