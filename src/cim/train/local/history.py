"""The run's metric history: kept in every checkpoint, sent to MLflow at checkpoints.

Every metric the trainer reports becomes a record ``{"step", "metrics"}`` in order. The records are part of
the checkpoint, so a resumed run holds the whole history (its summary and curves equal an uninterrupted
run's). MLflow receives the records only after the checkpoint that contains them is on disk, in one
``log_batch`` per chunk that also sets the run tag ``cim.history_logged`` (how many records the run holds):
a run killed between two checkpoints has in MLflow exactly the records of its last checkpoint, and its
resumption logs the rest -- no step is lost and none is logged twice. Wall-clock timings
(``train/step_s``) and the sentinels' metrics (``sentinel/*``, :data:`MLFLOW_ONLY`) go to MLflow with the
records but not into checkpoints (timings differ run to run; the checkpoint folders are DVC outputs and stay
the bytes they were before the sentinels) nor into the reports (:meth:`by_step`).
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

LOGGED_TAG = "cim.history_logged"
MAX_BATCH = 1000                      # MLflow's limit of metrics per log_batch call
MLFLOW_ONLY = ("sentinel/",)          # metrics sent to MLflow but kept out of checkpoints (like timings)


class RunHistory:
    def __init__(self, records: Optional[list[dict]] = None):
        self.records: list[dict] = [dict(r) for r in (records or [])]
        self._timing: dict[int, dict[str, float]] = {}      # record index -> timings etc., never checkpointed
        self._stamp: dict[int, int] = {}                     # record index -> when it was reported (ms)

    def add(self, step: int, metrics: dict[str, float], timing: Optional[dict[str, float]] = None) -> None:
        self._stamp[len(self.records)] = int(time.time() * 1000)
        extra = {**{k: float(v) for k, v in metrics.items() if k.startswith(MLFLOW_ONLY)}, **(timing or {})}
        if extra:
            self._timing[len(self.records)] = extra
        self.records.append({"step": int(step), "metrics": {k: float(v) for k, v in metrics.items()
                                                            if not k.startswith(MLFLOW_ONLY)}})

    def state(self) -> list[dict]:
        """What a checkpoint stores."""
        return [dict(r) for r in self.records]

    def flush(self, client, run_id: str) -> int:
        """Send the records MLflow's run does not hold yet (per its ``cim.history_logged`` tag)."""
        from mlflow.entities import Metric, RunTag

        done = int(client.get_run(run_id).data.tags.get(LOGGED_TAG, 0))
        sent = 0
        while done < len(self.records):
            batch, end = [], done
            while end < len(self.records):
                rec = self.records[end]
                stamp = self._stamp.get(end, int(time.time() * 1000))
                items = {**rec["metrics"], **self._timing.get(end, {})}
                metrics = [Metric(k, v, stamp, rec["step"]) for k, v in items.items() if not math.isnan(v)]
                if batch and len(batch) + len(metrics) > MAX_BATCH:
                    break
                batch.extend(metrics)
                end += 1
            client.log_batch(run_id, metrics=batch, tags=[RunTag(LOGGED_TAG, str(end))])
            sent += end - done
            done = end
        return sent

    # -- views for the reports ------------------------------------------------------------------------------
    def by_step(self, prefixes: tuple[str, ...] = ("train/", "eval/")) -> list[dict[str, Any]]:
        """One dict per step with the metrics whose names start with ``prefixes`` (the curves' input)."""
        steps: dict[int, dict[str, Any]] = {}
        for rec in self.records:
            picked = {k: v for k, v in rec["metrics"].items() if k.startswith(prefixes)}
            if picked:
                steps.setdefault(rec["step"], {"step": rec["step"]}).update(picked)
        return [steps[s] for s in sorted(steps)]

    def evaluations(self) -> list[dict[str, Any]]:
        return [s for s in self.by_step(("eval/",)) if s]
