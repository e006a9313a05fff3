"""Prefect flow: prepare the demo world (or take a given manifest) -> embed and index the corpus -> verify.

The same stage functions as `cim prepare`, `cim index` and `cim verify` (and so as the DVC stages: cim.stages),
as Prefect tasks with retries and caching keyed by their inputs (cim.flows). A flow run writes under runs/<flow-run>/ unless `--workspace` (the DVC workspace).
Runs with no Prefect server (a temporary local API is started), or as the `cim-index-corpus` deployment:

    python flows/index_corpus.py                       # the embedded default
    python flows/index_corpus.py index.kind=hnsw       # overrides, as `dvc exp run -S`
    python flows/index_corpus.py --manifest corpus.jsonl --sources sources.jsonl --skip-prepare
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, task

from cim.flows.common import cached, config, numbers_markdown, publish, relocate, run_dir, run_overrides
from cim.flows.tasks import build_corpus_index, prepare_world


@task(retries=1)
def verify_reward(params: str, overrides: list[str], index_dir: str) -> dict:
    """The ``verify`` stage over the index."""
    from cim.eval.quality_order import METRICS
    from cim.stages.verify import verify

    summary = verify(config(params, overrides), index_dir=index_dir)
    return {m: summary[m]["spearman_pooled"] for m in METRICS}


@flow(name="cim-index-corpus", log_prints=True, persist_result=True)
def index_corpus(params: str = "params.yaml", overrides: list[str] | None = None,
                 manifest: str | None = None, sources: str | None = None,
                 skip_prepare: bool = False, skip_verify: bool = False, protocol: str | None = None,
                 workspace: bool = False, mlflow_ui: str = "http://127.0.0.1:5000") -> dict:
    from cim.protocols import with_protocol

    overrides = with_protocol(protocol, overrides)
    generate = not skip_prepare and manifest is None
    folder = run_dir(workspace)
    overrides += run_overrides(config(params, overrides), folder,   # fails fast on a bad key
                               ["world", "index", "verify"] if generate else ["index", "verify"])
    world = cached(prepare_world, params, overrides) if generate else None
    if world:                                   # a cache hit may name an earlier run's world
        overrides += relocate(config(params, overrides), "world", world)
    cfg = config(params, overrides)
    index = cached(build_corpus_index, params, overrides, manifest or cfg.index.manifest,
                   sources if sources is not None else cfg.index.sources, world)
    meta = json.loads((Path(index) / "meta.json").read_text())
    result = {"folder": str(folder), "index": {"index_dir": index, "rows": meta.get("rows"),
                                               "checksums": meta.get("checksums")}}
    parent = None
    if not skip_verify and manifest is None:
        from cim.tracking import pipeline_parent

        result["verify"] = verify_reward(params, overrides, index)
        parent = pipeline_parent(cfg)       # the verify run's parent
    publish("cim-index-corpus", "CIM index", numbers_markdown(
        {"rows": meta.get("rows"), **{f"verify {k} (Spearman)": v for k, v in result.get("verify", {}).items()}}),
        cfg, parent, mlflow_ui, folder)
    print(json.dumps(result, indent=1, default=str))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", help="index this corpus manifest instead of the demo world")
    parser.add_argument("--sources", help="source images (id, image) to embed for QIR")
    parser.add_argument("--skip-prepare", action="store_true")
    parser.add_argument("--skip-verify", action="store_true")
    parser.add_argument("--protocol", help="a named protocol (configs/protocols/NAME.yaml)")
    parser.add_argument("--workspace", action="store_true", help="write into the DVC workspace, not runs/<run>/")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    index_corpus(args.params, args.overrides, args.manifest, args.sources, args.skip_prepare, args.skip_verify,
                 args.protocol, args.workspace)


if __name__ == "__main__":
    main()
