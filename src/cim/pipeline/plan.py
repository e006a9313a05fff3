"""The comparison's run plan, as data: the SFT start, every GRPO variant x seed from it, each run's captions,
the table, then its publication -- one :class:`Step` each, in an order that runs (every step after the ones it
needs), all from ``pipeline.*`` (:mod:`.variants`: runs and their folders).

Every runner iterates this one plan: DVC (``dvc.yaml``'s stages and matrix; tests/test_run_plan.py checks
them against it), the Prefect flow (``flows/pipeline.py``: a task per step), ``cim train --variant`` and
``cim compare`` (their defaults are their step's arguments) and the ablation's training measurement (its own
work folders: :func:`plan` of a config whose ``pipeline.*_dir`` point there). A step names its stage
function (:data:`STAGES`) by string, as this layer is below the stages: :func:`cim.stages.run_steps` resolves
it and calls ``function(cfg, **bind(step, done))``; the Prefect flow maps it to its task.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from cim.errors import ConfigError
from cim.pipeline.variants import captions_path, checkpoint_dir, run_of, runs

__all__ = ["Step", "STAGES", "plan", "step", "train_step", "bind", "captions_map"]

# a step's stage -> (module of cim.stages, function); the runner imports it
STAGES: dict[str, tuple[str, str]] = {
    "train_sft": ("train", "train_sft"),
    "train_variant": ("train", "train_variant"),
    "caption": ("caption", "caption"),
    "compare": ("compare", "compare"),
    "publish": ("publish", "publish"),
}


@dataclass(frozen=True)
class Step:
    """One step: ``name`` (its DVC stage: ``sft``, ``train@cim-0``, ``caption-sft``, ``caption@cim-0``,
    ``compare``, ``publish``), the ``cim`` command that runs it (``cmd``), its stage function (``stage``, a key
    of :data:`STAGES`) and keyword arguments after ``cfg`` (``args``), what it writes (``outs``), the path it
    returns (``result``; None: a table or a record) and the steps whose results it reads (``needs``)."""
    name: str
    stage: str
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    outs: tuple[str, ...] = ()
    result: str | None = None
    needs: tuple[str, ...] = ()


def _path(p) -> str:
    return Path(p).as_posix()


def _train(cfg, row: str, seed: int | None) -> Step:
    run = run_of(cfg, row, seed)
    ckpt, report = _path(checkpoint_dir(cfg, run)), _path(Path(cfg.pipeline.report_dir) / run)
    if seed is None:
        return Step(row, "train_sft", f"cim train --backend local --variant {row}",
                    {"out_dir": ckpt, "report_dir": report}, (ckpt, report), ckpt)
    sft = _path(checkpoint_dir(cfg, cfg.pipeline.sft))
    return Step(f"train@{row}-{seed}", "train_variant", f"cim train --backend local --variant {row} --seed {seed}",
                {"name": row, "seed": int(seed), "sft_dir": sft, "out_dir": ckpt, "report_dir": report},
                (ckpt, report), ckpt, (cfg.pipeline.sft,))


def _caption(cfg, trained: Step, run: str) -> Step:
    out = _path(captions_path(cfg, run))
    name = f"caption-{run}" if trained.stage == "train_sft" else "caption@" + trained.name.split("@", 1)[1]
    return Step(name, "caption", f"cim caption --captioner {run} --out {out}",
                {"captioner": run, "benchmark": cfg.pipeline.benchmark, "out_path": out,
                 "checkpoint": trained.result}, (_path(Path(out).parent),), out, (trained.name,))


def plan(cfg, rows: Sequence[str] | None = None) -> list[Step]:
    """The comparison's steps in order: ``sft``, ``caption-sft``, then per GRPO variant and seed
    ``train@<variant>-<seed>`` and ``caption@<variant>-<seed>``, then ``compare`` and ``publish``. ``rows``:
    only these GRPO variants (default every one of ``pipeline.variants``, in its order)."""
    pc = cfg.pipeline
    table = runs(cfg)                             # also checks the seeds and that no variant is named as the SFT
    grpo = [r for r in table if r != pc.sft]
    chosen = grpo if rows is None else [r for r in grpo if r in set(rows)]
    unknown = sorted(set(rows or ()) - set(grpo))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not a GRPO variant of pipeline.variants ({', '.join(grpo)})")
    sft = _train(cfg, pc.sft, None)
    steps = [sft, _caption(cfg, sft, pc.sft)]
    captions = {pc.sft: [steps[-1].result]}
    for row in chosen:
        captions[row] = []
        for seed in pc.seeds:
            trained = _train(cfg, row, int(seed))
            steps += [trained, _caption(cfg, trained, run_of(cfg, row, seed))]
            captions[row].append(steps[-1].result)
    out = _path(pc.out_dir)
    compare = Step("compare", "compare", f"cim compare --out {out}",
                   {"captions": captions, "benchmark": pc.benchmark, "baseline": pc.baseline, "out_dir": out,
                    "n_boot": int(pc.n_boot)}, (out,), None, tuple(s.name for s in steps if s.stage == "caption"))
    publish = Step("publish", "publish", f"cim publish --out {out}", {"out_dir": out}, (), None, ("compare",))
    return [*steps, compare, publish]


def step(cfg, name: str) -> Step:
    """The plan's step ``name`` (ConfigError when there is none)."""
    found = {s.name: s for s in plan(cfg)}
    if name not in found:
        raise ConfigError(f"no step {name!r} in the run plan: {', '.join(found)}")
    return found[name]


def train_step(cfg, row: str, seed: int | None = None) -> Step:
    """The step that trains ``row`` (the SFT start, or a GRPO variant with GRPO seed ``seed``, default the first
    of ``pipeline.seeds``; a seed outside them is a run of its own): what ``cim train --variant`` runs.
    ConfigError for a name that is no row, before any work."""
    from cim.pipeline.variants import variant_config

    variant_config(cfg, row)                      # a name that is no row: one line
    if row == cfg.pipeline.sft:
        return _train(cfg, row, None)
    return _train(cfg, row, int(cfg.pipeline.seeds[0] if seed is None else seed))


def captions_map(cfg) -> dict[str, list[str]]:
    """``{row: [captions.jsonl per seed]}``: the compare step's captions."""
    return step(cfg, "compare").args["captions"]


def bind(step_: Step, done: Mapping[str, Any]) -> dict[str, Any]:
    """The step's arguments with each planned result of an earlier step replaced by what that step returned
    (``done``: planned ``result`` -> the path returned; a cached Prefect task may return an earlier run's)."""
    def sub(value):
        if isinstance(value, str):
            return str(done.get(value, value))
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value
    return {k: sub(v) for k, v in step_.args.items()}
