"""The runner of the run plan's steps (:mod:`cim.pipeline.plan`) for the commands: each step's stage
function (:data:`cim.pipeline.plan.STAGES`, resolved here, above the stages) called in order with the config
and the step's arguments. Not a command: ``cim train --variant``, ``cim compare`` and ``cim ablate --train``
use it (the Prefect flow wraps each step in a task of its own: flows/pipeline.py)."""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Sequence

__all__ = ["stage_function", "run_steps"]


def stage_function(stage: str) -> Callable:
    """The function of ``cim.stages`` that runs a step of stage ``stage``."""
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
