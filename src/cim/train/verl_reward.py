"""verl's reward function for CIM: ``reward.custom_reward_function.path=pkg://cim.train.verl_reward``.

verl 0.9.1 calls ``compute_score`` once per rollout, concurrently inside each reward worker's event loop.
This module gathers those concurrent calls (:class:`cim.service.batching.MicroBatcher`) and scores them in
one go: one POST to the reward service (``service_url``), or one call of an in-process
:class:`cim.reward.scorer.Scorer` when no service URL is configured (built once per worker process from a
params snapshot, ``params``).

Contract with verl: every sample returns the *same keys* (:data:`KEYS`): the numeric keys of the reward's
result (:data:`cim.reward.schema.NUMERIC_KEYS`: ``score``, ``grc``, ``qir``, ``source_rank``, ``truncated``)
as floats, and the monitors ``failed``, ``source_retrieved``, ``caption_len``, ``caption_chars``. An item
that cannot be scored (service down after retries, unknown image id, empty caption, a caption that makes the
scorer raise) gets ``fallback_score``, ``failed = 1``, a counted log line, and never an exception into the
training step; the other samples of its batch are scored as if it were not there (the batcher re-scores
the callers of a failed batch apart).

reward kwargs (``+reward.custom_reward_function.reward_kwargs.<k>=<v>``), each also read from the
environment as ``CIM_REWARD_<K>`` (upper case) when not given:
``service_url``, ``token_env`` (name of the env var holding the bearer token), ``params`` (params file for
the in-process scorer), ``fallback_score``, ``window_ms``, ``max_batch``, ``timeout_s`` (per attempt),
``retries``, ``deadline_s`` (the whole call to the service, retries included).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from cim.reward.schema import NUMERIC_KEYS, RewardResult
from cim.service.batching import MicroBatcher
from cim.service.client import DEADLINE_S, read_token

log = logging.getLogger("cim.train.verl_reward")

MONITOR_KEYS = ("failed", "source_retrieved", "caption_len", "caption_chars")
KEYS = NUMERIC_KEYS + MONITOR_KEYS

_DEFAULTS = {"service_url": "", "token_env": "CIM_REWARD_TOKEN", "params": "", "fallback_score": 0.0,
             "window_ms": 50.0, "max_batch": 4096, "timeout_s": 120.0, "retries": 3, "deadline_s": DEADLINE_S}

# process-wide counters (a reward worker is one process); read with stats()
_STATS = {"calls": 0, "failed": 0, "batches": 0}
_STATS_LOCK = threading.Lock()
_BACKENDS: dict[tuple, "_Backend"] = {}
_BACKENDS_LOCK = threading.Lock()
_SCORERS: dict[str, Any] = {}


def stats() -> dict:
    """Counters of this process: calls, failed items, batches sent (observable batching)."""
    with _STATS_LOCK:
        return dict(_STATS)


def _setting(kwargs: dict, key: str) -> Any:
    if key in kwargs and kwargs[key] is not None:
        return kwargs[key]
    env = os.environ.get(f"CIM_REWARD_{key.upper()}")
    if env is not None and env != "":
        return env
    return _DEFAULTS[key]


_LOAD_FAILURES: dict[str, tuple[float, Exception]] = {}
LOAD_RETRY_S = 30.0


def _in_process_scorer(params: str):
    """One scorer per process and params file (loading encoders and the index is the expensive part).

    A failed load is remembered for ``LOAD_RETRY_S`` seconds, so a broken index costs one load attempt per
    window rather than one per batch.
    """
    import time

    scorer = _SCORERS.get(params)
    if scorer is not None:
        return scorer
    failed = _LOAD_FAILURES.get(params)
    if failed is not None and time.monotonic() - failed[0] < LOAD_RETRY_S:
        raise failed[1]
    from cim.config import load_config
    from cim.reward.scorer import Scorer

    try:
        scorer = Scorer.from_config(load_config(params or None))
    except Exception as exc:
        _LOAD_FAILURES[params] = (time.monotonic(), exc)
        raise
    _LOAD_FAILURES.pop(params, None)
    _SCORERS[params] = scorer
    return scorer


class _Backend:
    """One batcher per (event loop, settings); sends a batch to the service or the in-process scorer."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.fallback = float(settings["fallback_score"])
        url = str(settings["service_url"] or "")
        if url:
            from cim.service.client import AsyncRewardClient

            self.client: Optional[Any] = AsyncRewardClient(
                url, token=read_token(str(settings["token_env"] or "")), timeout_s=float(settings["timeout_s"]),
                retries=int(settings["retries"]), deadline_s=float(settings["deadline_s"]))
            self.executor = None
        else:
            self.client = None
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cim-reward")
        self.batcher = MicroBatcher(self._score, max_batch=int(settings["max_batch"]),
                                    window_s=float(settings["window_ms"]) / 1e3)

    async def _score(self, items: list[dict]) -> list[dict]:
        with _STATS_LOCK:
            _STATS["batches"] += 1
        if self.client is not None:
            return await self.client.score(items)
        loop = asyncio.get_running_loop()
        scorer = await loop.run_in_executor(self.executor, _in_process_scorer, str(self.settings["params"]))
        return await loop.run_in_executor(self.executor, scorer.score, items)


def _backend(settings: dict) -> _Backend:
    loop = asyncio.get_running_loop()
    key = (id(loop),) + tuple(sorted((k, str(v)) for k, v in settings.items()))
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(key)
        if backend is None or backend.batcher._loop not in (None, loop):
            backend = _BACKENDS[key] = _Backend(settings)
    return backend


def _image_id(ground_truth: Any, extra_info: Any) -> Optional[str]:
    if isinstance(extra_info, dict) and extra_info.get("image_id") not in (None, ""):
        return str(extra_info["image_id"])
    if ground_truth not in (None, ""):
        return str(ground_truth)
    return None


def _result(caption: str, fallback: float, scored: Optional[RewardResult], error: Optional[str]) -> dict:
    """verl's per-sample dict: the scored result's numeric keys as floats, plus the monitors; or the
    fallback score with ``failed = 1``. Always exactly :data:`KEYS`."""
    out = {"caption_len": float(len(caption.split())), "caption_chars": float(len(caption))}
    if scored is not None and error is None and scored.get("error") is None and scored.get("score") is not None:
        rank = scored["source_rank"]
        out.update({k: float(scored[k] or 0) for k in NUMERIC_KEYS},
                   failed=0.0, source_retrieved=1.0 if rank else 0.0)
    else:
        out.update({k: 0.0 for k in NUMERIC_KEYS}, score=fallback, failed=1.0, source_retrieved=0.0)
    return {k: out[k] for k in KEYS}


def _count_failure(image_id: Optional[str], reason: str) -> None:
    with _STATS_LOCK:
        _STATS["failed"] += 1
        n = _STATS["failed"]
    if n <= 20 or n % 100 == 0:  # every failure is counted; the log is bounded
        log.warning("CIM reward: item %s not scored (%s); fallback score used [%d failed so far]",
                    image_id, reason, n)


async def compute_score(data_source: Any = None, solution_str: Any = "", ground_truth: Any = None,
                        extra_info: Optional[dict] = None, **kwargs: Any) -> dict:
    """verl's per-rollout entry point; concurrent calls are scored as one batch. Never raises."""
    with _STATS_LOCK:
        _STATS["calls"] += 1
    try:
        settings = {k: _setting(kwargs, k) for k in _DEFAULTS}
        fallback = float(settings["fallback_score"])
    except (TypeError, ValueError) as exc:
        settings, fallback = None, 0.0
        _count_failure(None, f"bad reward kwargs: {exc}")
    caption = solution_str if isinstance(solution_str, str) else str(solution_str or "")
    caption = caption.strip()
    image_id = _image_id(ground_truth, extra_info)
    if settings is None:
        return _result(caption, fallback, None, "bad settings")
    if image_id is None:
        _count_failure(None, "no image_id in extra_info or ground_truth")
        return _result(caption, fallback, None, "no image id")
    try:
        [scored] = await _backend(settings).batcher.submit([{"caption": caption, "image_id": image_id}])
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the training step must go on
        _count_failure(image_id, f"{type(exc).__name__}: {exc}")
        return _result(caption, fallback, None, str(exc))
    if scored.get("error") is not None or scored.get("score") is None:
        _count_failure(image_id, str(scored.get("error")))
    return _result(caption, fallback, scored, None)
