"""Prefect tasks that more than one flow runs (the index flow and the pipeline): the world and the index.

Each is one call of its stage (:mod:`cim.stages`: the same function ``cim prepare`` / ``cim index`` and so
DVC run), retried, and cached by its inputs (:func:`cim.flows.common.inputs_key`); call them through
:func:`cim.flows.common.cached` so a deleted output is made again.
"""
from __future__ import annotations

from prefect import task

from cim.flows.common import config, inputs_key

CACHE = dict(cache_expiration=None, persist_result=True)


@task(retries=1, cache_key_fn=inputs_key("seed", "world"), **CACHE)
def prepare_world(params: str, overrides: list[str]) -> str:
    """The demo world at ``world.out_dir`` (the ``prepare`` stage); returns that folder."""
    from cim.stages.prepare import prepare

    return prepare(config(params, overrides), progress=False)["out_dir"]


@task(retries=2, retry_delay_seconds=5, cache_key_fn=inputs_key("seed", "encoders", "index"), **CACHE)
def build_corpus_index(params: str, overrides: list[str], manifest: str, sources: str | None,
                       world: str | None = None) -> str:
    """The index of ``manifest`` (keyed by its contents, the sources' and the world's) at ``index.out_dir``
    (the ``index`` stage). Resumable: a retry after a crash reuses the finished shards."""
    from cim.stages.index import index

    return index(config(params, overrides), manifest=manifest, sources=sources or None, progress=False)["out"]
