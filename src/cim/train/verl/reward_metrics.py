"""GRC, QIR and the reward's monitors per training step, logged from the reward side to the MLflow run.

verl 0.9.1 does not put a reward function's extra keys into the training metrics of a step: the v1 trainer's
``_compute_metrics`` reads ``rm_scores`` only (extras reach validation metrics and rollout dumps). So the
reward function aggregates them itself and logs ``cim_reward/<key>/mean`` (plus ``cim_reward/samples`` and
``cim_reward/reward_system_failed/count``) to the run named by ``MLFLOW_RUN_ID``, the run verl's own mlflow
logger attaches to, at verl's step. With guard terms (``reward.guards``: the samples carry ``guard_<name>``)
also each guard's mean and ``upsilon``'s (the paper's Υ; without guards it is ``score``).

Which step: verl's rollout servers tag every sample with the weights version that generated it
(``global_steps`` / ``max_global_steps``), and verl's reward manager merges those tags into ``extra_info``.
In the trainer, step N rolls out with the weights of step N - 1, so the step is version + 1. A sample without
the tags (another rollout engine, a test) goes to numbered time windows instead. Validation samples
(``extra_info.split == "val"``) are left out: verl reports them itself.

Several reward workers (Ray actors, one process each) score a step's samples. Each one sums what it saw and
pushes the partial sums after ``idle_s / 5`` without new samples of that step; when running under Ray the
partials go to one named actor per run (:class:`MetricsHub`), which logs a step's merged means once nothing
arrived for that step for ``idle_s``. Outside Ray, the process logs itself.

The sentinels (:mod:`cim.train.sentinels`, ``train.sentinels`` of the params file) ride on the same sums: with
``watch`` every sample adds its caption's text sums (n-gram sets unite across workers) and its guard values,
and the sink logs ``sentinel/*`` (repeat rate, distinct-1/2, length and its ratio to the first step's, guard
means) beside ``cim_reward/*`` and checks the thresholds: a trip prints its line (in the hub, Ray forwards it to
the driver's log) and tags the run. The hack probe is the local backend's only (it would score extra captions
from inside verl's reward loop), and ``on_trip: stop`` is refused at plan time (:func:`cim.train.verl.plan.
verl_plan`): the reward side cannot checkpoint or stop verl's trainer, so a trip here always only warns.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Optional

from cim.reward.guards import TERM_PREFIX
from cim.train.sentinels import merge as _merge
from cim.train.sentinels import text_sums

log = logging.getLogger("cim.train.verl.reward_metrics")

PREFIX = "cim_reward"
MEAN_OVER_SCORED = ("score", "grc", "qir", "source_retrieved", "truncated")
MEAN_OVER_ALL = ("failed", "reward_system_failed", "caption_len")

__all__ = ["StepMetrics", "MetricsHub", "step_of", "sample_sums", "to_metrics", "mlflow_sink", "hub_sink", "PREFIX",
           "sentinels_for"]


def step_of(extra_info: Any) -> Optional[int]:
    """verl's training step of a sample (see the module doc), or None when the sample carries no version."""
    if not isinstance(extra_info, dict):
        return None
    for key in ("max_global_steps", "global_steps"):
        value = extra_info.get(key)
        if value is not None:
            try:
                return int(value) + 1
            except (TypeError, ValueError):
                return None
    return None


def _terms(sample: dict) -> list[str]:
    """``upsilon`` and the ``guard_<name>`` keys of a sample that carries guards; [] without."""
    guards = [k for k in sample if k.startswith(TERM_PREFIX)]
    return ["upsilon", *guards] if guards else []


def sample_sums(sample: dict, watch: bool = False) -> dict:
    """One sample as sums: ``n`` (all), ``scored`` and per key its sum over the samples it is averaged on;
    with ``watch`` also the sentinels' sums of its ``caption`` and ``guards`` (:func:`cim.train.sentinels.
    text_sums`)."""
    scored = not sample.get("failed")
    out = {"n": 1.0, "scored": float(scored)}
    for key in MEAN_OVER_ALL:
        out[key] = float(sample.get(key, 0.0))
    for key in (*MEAN_OVER_SCORED, *_terms(sample)):
        out[key] = float(sample.get(key, 0.0)) if scored else 0.0
    if watch:
        _merge(out, text_sums(sample.get("caption", ""), sample.get("guards") if scored else None))
    return out


def to_metrics(sums: dict) -> dict[str, float]:
    """Merged sums -> the logged metrics."""
    out = {f"{PREFIX}/samples": sums["n"], f"{PREFIX}/reward_system_failed/count": sums["reward_system_failed"]}
    for key in MEAN_OVER_ALL:
        out[f"{PREFIX}/{key}/mean"] = sums[key] / sums["n"]
    if sums["scored"]:
        for key in (*MEAN_OVER_SCORED, *(k for k in sums if k == "upsilon" or k.startswith(TERM_PREFIX))):
            out[f"{PREFIX}/{key}/mean"] = sums[key] / sums["scored"]
    return out


class StepMetrics:
    """Sums per step; a step idle for ``idle_s`` is handed to ``sink(step, sums)`` (from a daemon thread).

    ``add(step, sample)`` takes one verl sample dict; ``merge(step, sums)`` takes partial sums (the hub).
    Step None is a time window (a new one starts after ``idle_s`` without samples), handed on as step None.
    ``watch``: add the sentinels' sums of every sample (:func:`sample_sums`).
    """

    def __init__(self, sink: Callable[[int, dict], None], idle_s: float = 10.0, watch: bool = False):
        self.sink, self.idle_s, self.watch = sink, float(idle_s), bool(watch)
        self._sums: dict = defaultdict(dict)
        self._seen: dict = {}
        self._window = 0
        self._window_seen = 0.0
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def add(self, step: Optional[int], sample: dict) -> None:
        self.merge(step, sample_sums(sample, self.watch))

    def merge(self, step: Optional[int], sums: dict) -> None:
        now = time.monotonic()
        with self._lock:
            if step is None:
                if now - self._window_seen > self.idle_s or not self._window:
                    self._window += 1
                self._window_seen = now
                step = ("window", self._window)        # kept apart from real steps
            _merge(self._sums[step], sums)
            self._seen[step] = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="cim-reward-metrics", daemon=True)
                self._thread.start()

    def flush(self, everything: bool = False) -> int:
        """Hand over the steps idle for ``idle_s`` (all with ``everything``); returns how many."""
        now = time.monotonic()
        with self._lock:
            due = [s for s, t in self._seen.items() if everything or now - t >= self.idle_s]
            parts = [(s, self._sums.pop(s)) for s in due]
            for s in due:
                del self._seen[s]
        for step, sums in sorted(parts, key=lambda p: (isinstance(p[0], tuple), p[0])):
            try:
                self.sink(None if isinstance(step, tuple) else step, sums)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop a training step
                log.warning("CIM reward metrics for step %s not logged: %s", step, exc)
        return len(parts)

    def _watch(self) -> None:
        while True:
            time.sleep(max(self.idle_s / 4, 0.05))
            self.flush()


def sentinels_for(params: str):
    """The sentinels of the params file ``params`` (None: ``train.sentinels.enabled`` is false, or the file does
    not load: metrics never stop training), without the hack probe and never stopping (see the module doc)."""
    try:
        from cim.config import load_config
        from cim.train.sentinels import Sentinels

        return Sentinels.from_config(load_config(params or None), stop=False)
    except Exception as exc:  # noqa: BLE001
        log.warning("CIM training sentinels off: %s", exc)
        return None


def mlflow_sink(run_id: str, tracking_uri: Optional[str] = None, sentinels=None) -> Callable[[Optional[int], dict], None]:
    """A sink logging :func:`to_metrics` of each step to an MLflow run (time windows at steps 1, 2, ...);
    with ``sentinels`` (:func:`sentinels_for`) also their metrics, a trip's line and tags."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri or None)
    windows = iter(range(1, 1 << 62))
    if sentinels is not None:
        sentinels.tag = lambda tags: client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def sink(step: Optional[int], sums: dict) -> None:
        at = next(windows) if step is None else int(step)
        stamp = int(time.time() * 1000)
        metrics = to_metrics(sums)
        watched = sentinels.summarise(at, sums) if sentinels is not None else {}
        client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, at) for k, v in {**metrics, **watched}.items()])
        if watched:
            sentinels.trips(at, watched)

    return sink


class MetricsHub:
    """The one place a run's partial sums meet (a named Ray actor, one per run): merges and logs them."""

    def __init__(self, run_id: str, tracking_uri: Optional[str], idle_s: float, params: Optional[str] = None):
        self.steps = StepMetrics(mlflow_sink(run_id, tracking_uri, sentinels_for(params) if params is not None
                                             else None), idle_s=idle_s)

    def merge(self, step: Optional[int], sums: dict) -> None:
        self.steps.merge(step, sums)

    def flush(self) -> int:
        return self.steps.flush(everything=True)


def hub_sink(run_id: str, tracking_uri: Optional[str], idle_s: float,
             params: Optional[str] = None) -> Callable[[Optional[int], dict], None]:
    """A sink pushing partial sums to the run's :class:`MetricsHub` actor (created by the first pusher;
    ``params``: whose sentinels it runs)."""
    import ray

    hub = ray.remote(num_cpus=0)(MetricsHub).options(
        name=f"cim_reward_metrics_{run_id}", get_if_exists=True).remote(run_id, tracking_uri, idle_s, params)

    def sink(step: Optional[int], sums: dict) -> None:
        hub.merge.remote(step, sums)               # fire and forget: a step never waits for metrics

    return sink
