"""One function per stage: what ``cim <command>``, the DVC stages (which run the commands) and the Prefect
flows all call, so the three runners run the same code and write the same bytes.

A stage function takes the config (:func:`cim.config.load_config`) and owns everything that makes its result
reproducible and recorded: it checks the names of the pluggable parts it uses before any work
(:func:`cim.config.check_names`), runs under :func:`cim.determinism.deterministic` where it computes, opens
its MLflow run (``track=True``; a child of the pipeline execution's parent run, :mod:`cim.tracking`) before
the work so the run's duration covers it, writes its outputs atomically, and returns what it made. It never
parses arguments or prints a table: the command does that.

=================  ==========================================================================================
stage              function
=================  ==========================================================================================
prepare            :func:`cim.stages.prepare.prepare` — the demo world
manifest           :func:`cim.stages.manifest.manifest` — a corpus manifest from a dataset release
index              :func:`cim.stages.index.index` — resumable shards, the search index, source embeddings
score              :func:`cim.stages.score.score_file` — captions in, rewards out
verify             :func:`cim.stages.verify.verify` — does the reward order captions of known quality?
audit              :func:`cim.stages.audit.audit` — does it carry signal on this corpus? (no labels)
evaluate           :func:`cim.stages.evaluate.evaluate` — benchmarks x captions -> metrics, tables
serve              :func:`cim.stages.serve.serve` — the reward service
prepare-train      :func:`cim.stages.prepare_train.prepare_train` — verl's parquet
train              :func:`cim.stages.train.train`, :func:`~cim.stages.train.train_sft`,
                   :func:`~cim.stages.train.train_variant` — GRPO (verl or the local backend)
caption            :func:`cim.stages.caption.caption` — a captioner over a benchmark
compare            :func:`cim.stages.compare.compare` — the captioners' table
publish            :func:`cim.stages.publish.publish` — the table into MLflow, once per execution
ablate             :func:`cim.stages.ablate.ablate` — the paper's ablations of the reward
=================  ==========================================================================================

Import a stage from its module: ``from cim.stages.index import index``. Importing this package imports none.
No stage imports another (a shared body lives in a lower layer): the entry points chain stages. The
comparison's steps are data (:func:`cim.pipeline.plan.plan`, each naming its stage function); this package
resolves those names (:func:`stage_function`) and runs steps in order (:func:`run_steps`) for the commands
(``cim train --variant``, ``cim compare``, ``cim ablate --train``) and the ablations flow; the pipeline flow
runs a Prefect task per step instead.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Sequence

__all__ = ["stage_function", "run_steps"]


def stage_function(stage: str) -> Callable:
    """The function that runs a step of stage ``stage`` (a key of :data:`cim.pipeline.plan.STAGES`)."""
    from cim.pipeline.plan import STAGES

    module, name = STAGES[stage]
    return getattr(importlib.import_module(f"cim.stages.{module}"), name)


def run_steps(cfg, steps: Sequence, *, progress: bool = True) -> dict[str, Any]:
    """Run ``steps`` in order; returns ``{step name: what its stage returned}``. A needed step that is among
    ``steps`` must come first (ValueError); one that is not is taken as done, its output where the plan puts it
    (``cim train --variant cim`` reads the SFT start there). A stage that takes ``progress`` gets it."""
    from cim.pipeline.plan import bind

    out: dict[str, Any] = {}
    done: dict[str, Any] = {}
    for step in steps:
        missing = [n for n in step.needs if n not in out and any(s.name == n for s in steps)]
        if missing:
            raise ValueError(f"step {step.name} runs before {', '.join(missing)}, which it needs")
        fn = stage_function(step.stage)
        kwargs = bind(step, done)
        if "progress" in inspect.signature(fn).parameters:
            kwargs["progress"] = progress
        out[step.name] = fn(cfg, **kwargs)
        if step.result is not None:
            done[step.result] = out[step.name]
    return out
