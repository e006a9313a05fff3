"""Prefect tasks that more than one flow runs (the index flow and the pipeline): the world and the index.

Each is a thin call into the library, retried, and cached by its inputs (:func:`cim.flows.common.inputs_key`);
call them through :func:`cim.flows.common.cached` so a deleted output is made again.
"""
from __future__ import annotations

from pathlib import Path

from prefect import task

from cim.flows.common import config, inputs_key

CACHE = dict(cache_expiration=None, persist_result=True)


@task(retries=1, cache_key_fn=inputs_key("world"), **CACHE)
def prepare_world(params: str, overrides: list[str]) -> str:
    """The demo world at ``world.out_dir``; returns that folder."""
    from cim.data.world import generate_world

    cfg = config(params, overrides)
    generate_world(cfg.world)
    return str(cfg.world.out_dir)


@task(retries=2, retry_delay_seconds=5, cache_key_fn=inputs_key("encoders", "index"), **CACHE)
def build_corpus_index(params: str, overrides: list[str], manifest: str, sources: str | None,
                       world: str | None = None) -> str:
    """The index of ``manifest`` (keyed by its contents, the sources' and the world's) at ``index.out_dir``.
    Resumable: a retry after a crash reuses the finished shards."""
    from cim.index import build_index

    cfg = config(params, overrides)
    return str(build_index(cfg, Path(manifest), Path(cfg.index.out_dir), Path(sources) if sources else None))
