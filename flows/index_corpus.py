"""Prefect flow: prepare the demo world (or take a given manifest) -> embed and index the corpus -> verify.

The same library calls as the DVC stages, as Prefect tasks with retries and result caching keyed by their
inputs. Runs with no Prefect server (a temporary local API is started), or against a deployment:

    python flows/index_corpus.py                       # the embedded default
    python flows/index_corpus.py index.kind=hnsw       # overrides, as `dvc exp run -S`
    python flows/index_corpus.py --manifest corpus.jsonl --sources sources.jsonl --skip-prepare
"""
from __future__ import annotations

import argparse
import hashlib
import json
from datetime import timedelta
from pathlib import Path

from prefect import flow, task

from cim.config import load_config, to_dict


def _cfg(params: str, overrides: list[str]):
    return load_config(params, overrides)


def _world_cache_key(context, arguments) -> str:
    """The world's config and its completion marker: a deleted or regenerated world is not a cache hit."""
    cfg = _cfg(arguments["params"], arguments["overrides"])
    marker = Path(cfg.world.out_dir) / "world.json"
    stamp = marker.read_bytes() if marker.exists() else b"absent"
    payload = json.dumps(to_dict(cfg.world), sort_keys=True).encode() + stamp
    return "world-" + hashlib.sha256(payload).hexdigest()


@task(retries=1, cache_key_fn=_world_cache_key, cache_expiration=timedelta(days=7), persist_result=True)
def prepare_world(params: str, overrides: list[str]) -> str:
    from cim.data.world import generate_world

    cfg = _cfg(params, overrides)
    generate_world(cfg.world)
    return str(Path(cfg.world.out_dir).resolve())


@task(retries=2, retry_delay_seconds=5)
def build_corpus_index(params: str, overrides: list[str], manifest: str, sources: str | None) -> dict:
    """Resumable: a retry after a crash reuses the finished shards."""
    from cim.index import build_index

    cfg = _cfg(params, overrides)
    out = build_index(cfg, Path(manifest), Path(cfg.index.out_dir), Path(sources) if sources else None)
    meta = json.loads((Path(out) / "meta.json").read_text())
    return {"index_dir": str(out), "rows": meta.get("rows"), "checksums": meta.get("checksums")}


@task(retries=1)
def verify_reward(params: str, overrides: list[str], index_dir: str) -> dict:
    from cim.reward.quality_order import verify

    return verify(_cfg(params, overrides), index_dir=index_dir)


@flow(name="cim-index-corpus", log_prints=True)
def index_corpus(params: str = "params.yaml", overrides: list[str] | None = None,
                 manifest: str | None = None, sources: str | None = None,
                 skip_prepare: bool = False, skip_verify: bool = False, protocol: str | None = None) -> dict:
    overrides = ([f"protocol={protocol}"] if protocol else []) + list(overrides or [])
    cfg = _cfg(params, overrides)  # fail fast on a bad key before any work
    print("config hash", hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12])
    if not skip_prepare and manifest is None:
        prepare_world(params, overrides)
    index = build_corpus_index(params, overrides, manifest or cfg.index.manifest,
                               sources if sources is not None else cfg.index.sources)
    result = {"index": index}
    if not skip_verify and manifest is None:
        from cim.reward.quality_order import METRICS

        summary = verify_reward(params, overrides, index["index_dir"])
        result["verify"] = {m: summary[m]["spearman_pooled"] for m in METRICS}
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
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    index_corpus(args.params, args.overrides, args.manifest, args.sources, args.skip_prepare, args.skip_verify,
                 args.protocol)


if __name__ == "__main__":
    main()
