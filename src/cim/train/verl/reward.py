"""verl's reward function for CIM: ``reward.custom_reward_function.path=pkg://cim.train.verl.reward``.

verl 0.9.1 calls ``compute_score`` once per rollout, concurrently inside each reward worker's event loop.
This module gathers those concurrent calls (:class:`cim.service.batching.MicroBatcher`) and scores them in
one go: one POST to the reward service (``service_url``), or one call of an in-process
:class:`cim.reward.scorer.Scorer` when no service URL is configured (built once per worker process from a
params snapshot, ``params``).

Contract with verl: every sample returns the *same keys* (:data:`KEYS`): the numeric keys of the reward's
result (:data:`cim.reward.schema.NUMERIC_KEYS`: ``score``, ``upsilon``, ``grc``, ``qir``, ``source_rank``,
``truncated``) as floats, and the monitors ``failed``, ``reward_system_failed``, ``source_retrieved``,
``caption_len``, ``caption_chars``; then ``guard_<name>`` of every guard the params configure
(``reward.guards``; 0.0 for a failed sample, as every term): verl's GDPO (``reward.aggregate=gdpo``) finds its
keys among them.

Two kinds of failure, kept apart (both counted, :func:`stats`, and logged, bounded):

- **the caption is no text** (empty, whitespace, not UTF-8; ``error_kind == "caption"``): the captioner's
  fault; the sample gets the floor ``fallback_score`` and ``failed = 1``;
- **the reward system failed** (the service stayed down or slow past the client deadline, the scorer raised,
  the params or index do not load, an image id the index does not know): never the caption's fault, so it
  must not look like a bad caption. ``on_failure = "raise"`` (default) raises :class:`RewardSystemError`:
  verl's v1 trainer then marks that rollout's session failed and trains its group without it (the legacy
  trainer fails the step); ``on_failure = "neutral"`` gives ``neutral_score`` (the same constant in every
  worker, so a group whose samples all failed gets advantage 0) with ``failed = reward_system_failed = 1``.
  verl 0.9.1 hands the function one sample at a time, without the group id (``uid``), in a random worker:
  equal rewards for a group whose samples failed only in part are out of its reach.

The other samples of a batch are scored as if a bad one were not there (the batcher re-scores the callers of
a failed batch apart). Per training step, GRC, QIR and the monitors go to the MLflow run (``MLFLOW_RUN_ID``):
:mod:`cim.train.verl.reward_metrics`.

reward kwargs (``+reward.custom_reward_function.reward_kwargs.<k>=<v>``), each also read from the
environment as ``CIM_REWARD_<K>`` (upper case) when not given, else from the params file (``params``; the
schema's default without one): :data:`KWARGS` maps each to its config key -- ``service_url``
(``train.service.url``), ``token_env`` (the env var holding the bearer token), ``fallback_score``,
``on_failure``, ``neutral_score``, ``window_ms``, ``max_batch``, ``timeout_s`` (per attempt), ``retries``,
``deadline_s`` (the whole call to the service, retries included), ``ready_s`` (before its first batch a
worker waits this long for every replica of ``service_url``, a comma-separated list, to answer ``/health``;
with ``retries=0`` it asks once), ``backoff_s``, ``cooldown_s``, ``max_connections`` (the client's),
``metrics_idle_s`` (a step's metrics are logged once no sample of it arrived
for this long; 0 turns the logging off). ``params`` is the params file itself (also the in-process scorer's).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from cim.reward.guards import TERM_PREFIX, term_value
from cim.reward.schema import NUMERIC_KEYS, RewardResult
from cim.service.batching import MicroBatcher
from cim.service.client import read_token

log = logging.getLogger("cim.train.verl.reward")

MONITOR_KEYS = ("failed", "reward_system_failed", "source_retrieved", "caption_len", "caption_chars")
KEYS = NUMERIC_KEYS + MONITOR_KEYS
# reward kwarg -> its config key (the schema holds every default and choice: cim.config)
KWARGS = {"service_url": "train.service.url", "token_env": "train.service.token_env",
          "fallback_score": "train.service.fallback_score", "on_failure": "reward.on_failure",
          "neutral_score": "reward.neutral_score", "window_ms": "train.service.client_window_ms",
          "max_batch": "train.service.client_max_batch", "timeout_s": "train.service.timeout_s",
          "retries": "train.service.retries", "deadline_s": "train.service.deadline_s",
          "metrics_idle_s": "train.service.metrics_idle_s", "ready_s": "train.service.startup_timeout_s",
          "backoff_s": "train.service.backoff_s", "cooldown_s": "train.service.cooldown_s",
          "max_connections": "train.service.max_connections"}

# process-wide counters (a reward worker is one process); read with stats()
_STATS = {"calls": 0, "failed": 0, "caption_failed": 0, "reward_system_failed": 0, "batches": 0}
_STATS_LOCK = threading.Lock()
_BACKENDS: dict[tuple, "_Backend"] = {}
_BACKENDS_LOCK = threading.Lock()
_SCORERS: dict[str, Any] = {}
_LOAD_FAILURES: dict[str, tuple[float, Exception]] = {}
LOAD_RETRY_S = 30.0


class RewardSystemError(RuntimeError):
    """The reward system, not the caption, failed for this sample (``on_failure = "raise"``)."""


def stats() -> dict:
    """Counters of this process: calls, failed items (of which caption / reward-system failures), batches."""
    with _STATS_LOCK:
        return dict(_STATS)


@functools.lru_cache(maxsize=8)
def _params_defaults(params: str) -> dict:
    """Every kwarg's value in the params file ``params`` (the schema's defaults when none is given)."""
    from omegaconf import OmegaConf

    from cim.config import load_config

    from cim.reward.guards import guard_keys

    cfg = load_config(params or None)
    return {**{key: OmegaConf.select(cfg, path) for key, path in KWARGS.items()},
            "guard_keys": tuple(guard_keys(cfg.reward))}


def _settings(kwargs: dict) -> dict:
    """Every setting, checked; raises RewardSystemError naming a bad one (a misconfigured run must stop)."""
    from cim.config import choices

    out = {"params": kwargs.get("params") or os.environ.get("CIM_REWARD_PARAMS") or ""}
    try:
        for key in KWARGS:
            value = kwargs.get(key)
            if value is None:
                env = os.environ.get(f"CIM_REWARD_{key.upper()}")
                value = env if env not in (None, "") else None
            out[key] = value
        defaults = _params_defaults(str(out["params"]))   # the params file (or the schema) for the rest
        out.update({key: defaults[key] for key in KWARGS if out[key] is None}, guard_keys=defaults["guard_keys"])
        for key in ("fallback_score", "neutral_score", "window_ms", "timeout_s", "deadline_s", "metrics_idle_s",
                    "ready_s", "backoff_s", "cooldown_s"):
            out[key] = float(out[key])
        for key in ("max_batch", "retries", "max_connections"):
            out[key] = int(out[key])
    except Exception as exc:  # noqa: BLE001 - a bad value or an unreadable params file
        raise RewardSystemError(f"CIM reward settings are invalid: {exc}") from None
    if out["on_failure"] not in choices("reward.on_failure"):
        raise RewardSystemError(f"CIM reward on_failure={out['on_failure']!r} is not one of "
                                f"{', '.join(choices('reward.on_failure'))}")
    return out


def _in_process_scorer(params: str):
    """One scorer per process and params file (loading encoders and the index is the expensive part).

    A failed load is remembered for ``LOAD_RETRY_S`` seconds, so a broken index costs one load attempt per
    window rather than one per batch.
    """
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
        url = str(settings["service_url"] or "")
        if url:
            from cim.service.client import AsyncRewardClient

            self.client: Optional[Any] = AsyncRewardClient(
                url, token=read_token(str(settings["token_env"] or "")), timeout_s=float(settings["timeout_s"]),
                retries=int(settings["retries"]), deadline_s=float(settings["deadline_s"]),
                backoff_s=float(settings["backoff_s"]), cooldown_s=float(settings["cooldown_s"]),
                max_connections=int(settings["max_connections"]))
            self.executor = None
            self._ready: Optional[asyncio.Task] = None
        else:
            self.client = None
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cim-reward")
        self.batcher = MicroBatcher(self._score, max_batch=int(settings["max_batch"]),
                                    window_s=float(settings["window_ms"]) / 1e3)

    async def _score(self, items: list[dict]) -> list[dict]:
        with _STATS_LOCK:
            _STATS["batches"] += 1
        if self.client is not None:
            if self._ready is None:             # every replica up before the first batch (once per worker)
                wait = float(self.settings["ready_s"]) if int(self.settings["retries"]) > 0 else 0.0  # 0: ask once
                self._ready = asyncio.ensure_future(self.client.wait_ready(wait))
            try:
                await asyncio.shield(self._ready)
            except Exception:
                self._ready = None              # the next batch waits again
                raise
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


def _result(caption: str, scored: Optional[RewardResult], failure: Optional[tuple[str, float]] = None,
            guards: tuple = ()) -> dict:
    """verl's per-sample dict, always exactly :data:`KEYS` and then the ``guards`` keys (``guard_<name>``): the
    scored result's numeric keys and guard values as floats plus the monitors, or (``failure = (kind, score)``)
    that score with ``failed = 1`` and every term 0."""
    out = {"caption_len": float(len(caption.split())), "caption_chars": float(len(caption))}
    if failure is None:
        out.update({k: float(scored[k] or 0) for k in NUMERIC_KEYS}, failed=0.0, reward_system_failed=0.0,
                   source_retrieved=1.0 if scored["source_rank"] else 0.0)
        out.update({k: term_value(scored, k) for k in guards})
    else:
        kind, score = failure
        out.update({k: 0.0 for k in (*NUMERIC_KEYS, *guards)}, score=score, failed=1.0, source_retrieved=0.0,
                   reward_system_failed=1.0 if kind == "reward_system_failed" else 0.0)
    return {k: out[k] for k in (*KEYS, *guards)}


def _count_failure(kind: str, image_id: Optional[str], reason: str, outcome: str) -> None:
    with _STATS_LOCK:
        _STATS["failed"] += 1
        _STATS[kind] += 1
        n = _STATS[kind]
    if n <= 20 or n % 100 == 0:  # every failure is counted; the log is bounded
        log.warning("CIM reward: item %s not scored (%s); %s [%d %s so far]", image_id, reason, outcome, n,
                    kind.replace("_", " "))


def _system_failure(settings: dict, extra_info: Any, caption: str, image_id: Optional[str], reason: str) -> dict:
    """Raise or give ``neutral_score`` (``on_failure``); recorded in the step's metrics either way."""
    out = _record(settings, extra_info, _result(caption, None, ("reward_system_failed", settings["neutral_score"]),
                                                settings["guard_keys"]), caption)
    if settings["on_failure"] == "raise":
        _count_failure("reward_system_failed", image_id, reason, "raised (reward.on_failure=raise)")
        raise RewardSystemError(f"CIM reward system failed for image {image_id!r}: {reason}. The caption is not "
                                "at fault; this sample is not given a reward (reward.on_failure=raise)")
    _count_failure("reward_system_failed", image_id, reason, f"neutral score {settings['neutral_score']:g} used")
    return out


_METRICS: dict[tuple, Any] = {}
_METRICS_LOCK = threading.Lock()


def _step_metrics(settings: dict):
    """This process's per-step aggregator for the MLflow run in ``MLFLOW_RUN_ID`` (None: logging off)."""
    run_id, idle = os.environ.get("MLFLOW_RUN_ID", ""), settings["metrics_idle_s"]
    if not run_id or idle <= 0:
        return None
    key = (run_id, idle)
    with _METRICS_LOCK:
        if key not in _METRICS:
            import sys

            from cim.train.verl import reward_metrics as rm

            uri = os.environ.get("MLFLOW_TRACKING_URI") or None
            params = str(settings["params"])
            sentinels = rm.sentinels_for(params)            # the training sentinels ride on the step sums
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():   # several workers: one hub
                _METRICS[key] = rm.StepMetrics(rm.hub_sink(run_id, uri, idle, params), idle_s=idle / 5,
                                               watch=sentinels is not None)
            else:
                _METRICS[key] = rm.StepMetrics(rm.mlflow_sink(run_id, uri, sentinels), idle_s=idle,
                                               watch=sentinels is not None)
        return _METRICS[key]


def _record(settings: dict, extra_info: Any, out: dict, caption: str = "", scored: Optional[dict] = None) -> dict:
    """``out`` into the step's metrics (with the caption and its guard values: the sentinels'); returns it."""
    from cim.train.verl.reward_metrics import step_of

    metrics = _step_metrics(settings)
    if metrics is not None and not (isinstance(extra_info, dict) and extra_info.get("split") == "val"):
        metrics.add(step_of(extra_info), {**out, "caption": caption, "guards": (scored or {}).get("guards")}
                    if metrics.watch else out)
    return out


async def compute_score(data_source: Any = None, solution_str: Any = "", ground_truth: Any = None,
                        extra_info: Optional[dict] = None, **kwargs: Any) -> dict:
    """verl's per-rollout entry point; concurrent calls are scored as one batch.

    Raises :class:`RewardSystemError` only when the reward system failed and ``on_failure = "raise"``."""
    with _STATS_LOCK:
        _STATS["calls"] += 1
    settings = _settings(kwargs)
    caption = solution_str if isinstance(solution_str, str) else str(solution_str or "")
    caption = caption.strip()
    image_id = _image_id(ground_truth, extra_info)
    if image_id is None:
        return _system_failure(settings, extra_info, caption, None, "no image_id in extra_info or ground_truth")
    try:
        [scored] = await _backend(settings).batcher.submit([{"caption": caption, "image_id": image_id}])
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the service, the scorer or the index failed
        return _system_failure(settings, extra_info, caption, image_id, f"{type(exc).__name__}: {exc}")
    if scored.get("error") is None and scored.get("score") is not None:
        lacking = [k for k in settings["guard_keys"] if k[len(TERM_PREFIX):] not in (scored.get("guards") or {})]
        if lacking:
            return _system_failure(settings, extra_info, caption, image_id, f"the scorer gives no {lacking[0]} "
                                   "(it scores without a guard the params configure in reward.guards)")
        return _record(settings, extra_info, _result(caption, scored, guards=settings["guard_keys"]), caption, scored)
    if scored.get("error_kind") == "caption":
        _count_failure("caption_failed", image_id, str(scored["error"]),
                       f"floor score {settings['fallback_score']:g} used")
        return _record(settings, extra_info, _result(caption, None, ("caption_failed", settings["fallback_score"]),
                                                     settings["guard_keys"]), caption)
    return _system_failure(settings, extra_info, caption, image_id, str(scored.get("error")))
