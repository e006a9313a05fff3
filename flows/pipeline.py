"""Prefect flow `cim-pipeline`: world -> index -> SFT start -> GRPO variants -> captions -> the comparison table.

The same library calls as the DVC stages (cim.pipeline), one task each, retried and cached by their inputs
(config sections, input files' contents, the cim code; never the run id), so a second run with the same
inputs reuses the first one's outputs. Everything is written under runs/<flow-run>/ unless `--workspace`;
one MLflow parent run holds a child run per stage and variant. The run publishes a markdown artifact
(the table and the MLflow link) and returns the table {"benchmark", "baseline", "rows"}.

    python flows/pipeline.py                            # the embedded default (params.yaml)
    python flows/pipeline.py world.n_corpus=600 ...     # overrides, as `dvc exp run -S`
    prefect deployment run cim-pipeline/cim-pipeline    # on the cim-cpu pool (prefect.yaml)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, task

from cim.flows.common import cached, config, inputs_key, publish, relocate, run_dir, run_overrides
from cim.flows.tasks import CACHE, build_corpus_index, prepare_world

TRAIN = ("seed", "train", "reward", "encoders", "index", "world")


@task(retries=1, cache_key_fn=inputs_key(*TRAIN, "pipeline.sft"), **CACHE)
def train_sft(params: str, overrides: list[str], index: str, world: str, out_dir: str) -> str:
    """The SFT start (resumes from its newest checkpoint on a retry)."""
    from cim.pipeline import train_sft as run

    return str(run(config(params, overrides), out_dir, progress=False))


@task(retries=1, cache_key_fn=inputs_key(*TRAIN, "pipeline.sft", "pipeline.variants"), **CACHE)
def train_variant(params: str, overrides: list[str], name: str, sft_dir: str, index: str, world: str,
                  out_dir: str) -> str:
    """GRPO from the SFT start with the variant's overrides."""
    from cim.pipeline import train_variant as run

    return str(run(config(params, overrides), name, sft_dir, out_dir, progress=False))


@task(retries=1, cache_key_fn=inputs_key("eval", "train.local", "pipeline", "world"), **CACHE)
def caption(params: str, overrides: list[str], name: str, checkpoint: str, benchmark: str, world: str,
            out_path: str) -> str:
    """The captioner's captions of the benchmark (greedy, batched)."""
    from cim.pipeline import caption as run

    return str(run(config(params, overrides), name, benchmark, out_path, checkpoint=checkpoint, progress=False))


@task(retries=1, cache_key_fn=inputs_key("eval", "encoders", "reward", "index", "pipeline", "world"), **CACHE)
def compare(params: str, overrides: list[str], captions: dict[str, str], benchmark: str, baseline: str,
            index: str, world: str, out_dir: str) -> dict:
    """Every captioner's metrics and the deltas against the baseline row: the table."""
    from cim.pipeline import compare as run

    return run(config(params, overrides), captions, benchmark, baseline, out_dir)


@flow(name="cim-pipeline", log_prints=True, persist_result=True)
def cim_pipeline(params: str = "params.yaml", overrides: list[str] | None = None, protocol: str | None = None,
                 workspace: bool = False, mlflow_ui: str = "http://127.0.0.1:5000") -> dict:
    """``workspace``: write into the DVC workspace (default: runs/<flow-run>/). ``mlflow_ui``: where
    `mlflow ui` serves the store, for the artifact's link."""
    from cim.pipeline import variants
    from cim.tracking import pipeline_parent

    overrides = ([f"protocol={protocol}"] if protocol else []) + list(overrides or [])
    folder = run_dir(workspace)
    overrides += run_overrides(config(params, overrides), folder,     # fails fast on a bad key
                               ["world", "index", "verify", "train", "eval", "pipeline"])
    parent = pipeline_parent(config(params, overrides))   # opened first: its duration covers the run

    world = cached(prepare_world, params, overrides)
    overrides += relocate(config(params, overrides), "world", world)   # a cache hit: an earlier run's world
    cfg = config(params, overrides)
    index = cached(build_corpus_index, params, overrides, cfg.index.manifest, cfg.index.sources, world)
    overrides += relocate(cfg, "index", index)
    cfg = config(params, overrides)
    pc = cfg.pipeline

    ckpt = Path(pc.checkpoint_dir)
    sft = cached(train_sft, params, overrides, index, world, str(ckpt / pc.sft))
    checkpoints = {pc.sft: sft}
    for name in variants(cfg):
        if name != pc.sft:
            checkpoints[name] = cached(train_variant, params, overrides, name, sft, index, world, str(ckpt / name))
    captions = {name: cached(caption, params, overrides, name, path, pc.benchmark, world,
                             str(Path(pc.captions_dir) / name / "captions.jsonl"))
                for name, path in checkpoints.items()}
    table = compare(params, overrides, captions, pc.benchmark, pc.baseline, index, world, pc.out_dir)

    from cim.pipeline.table import markdown

    publish("cim-pipeline", "CIM captioners", markdown(table), cfg, parent, mlflow_ui, folder)
    print(markdown(table))
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
