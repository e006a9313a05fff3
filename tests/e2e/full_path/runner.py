"""Run steps in order, time each, stop at the first failure with one line, write ``summary.json``.

A step is a function ``fn(ctx) -> dict`` (its outputs, JSON-able). A step fails by raising; the message is
``step <i>/<n> <name> failed (<seam>): <error>``, the traceback goes to ``logs/<name>.traceback.txt`` and
the remaining steps are listed as ``not run``. ``cim`` commands run as subprocesses through :func:`cim`,
their output in ``logs/<name>.log``; a failing command's last stderr line is the error.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Step", "Context", "StepFailed", "run_steps", "cim_command"]


class StepFailed(RuntimeError):
    """A step's check failed (the message says what was expected and what came)."""


@dataclass
class Step:
    name: str
    seam: str                         # what this step hands to the next one, in a few words
    fn: Callable[["Context"], dict]


@dataclass
class Context:
    out: Path
    progress: Callable[[str], None] = print
    state: dict[str, Any] = field(default_factory=dict)   # what steps hand each other (not serialised)
    current: str = ""
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def log_path(self, name: str | None = None) -> Path:
        path = self.out / "logs" / f"{name or self.current}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def cim(self, *args: str, timeout_s: float = 600.0) -> str:
        """``cim <args>`` in the out folder; returns its stdout; StepFailed with its last error line."""
        log = self.log_path()
        cmd = cim_command() + list(args)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=self.out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout_s, env=os.environ.copy())
            f.write(proc.stdout)
            f.write(proc.stderr)
            f.write(f"# exit {proc.returncode} after {time.perf_counter() - t0:.1f}s\n")
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            raise StepFailed(f"`cim {args[0]}` exited {proc.returncode}: {lines[-1] if lines else '(no output)'} "
                             f"(log: {log})")
        return proc.stdout


def cim_command() -> list[str]:
    """The ``cim`` console script of this interpreter's environment, else ``python -m cim.cli``."""
    script = Path(sys.executable).parent / "cim"
    if script.is_file():
        return [str(script)]
    found = shutil.which("cim")
    return [found] if found else [sys.executable, "-m", "cim.cli"]


def _one_line(exc: BaseException) -> str:
    """``Type: first line`` (a Ray task's error is reported by its cause), with the innermost frame."""
    if isinstance(exc, StepFailed):
        return str(exc).strip().splitlines()[0]
    cause = getattr(exc, "cause", None)           # ray.exceptions.RayTaskError wraps the actor's exception
    inner = cause if isinstance(cause, BaseException) else exc
    text = str(inner).strip().splitlines()
    msg = f"{type(inner).__name__}: {text[-1] if isinstance(cause, BaseException) and text else (text[0] if text else '')}"
    frames = traceback.extract_tb(inner.__traceback__) if inner.__traceback__ else []
    where = f" [{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}]" if frames else ""
    return msg + where


def run_steps(steps: list[Step], ctx: Context, summary_path: Path, header: dict | None = None) -> dict:
    """Run ``steps`` in order; returns the summary (also written to ``summary_path`` after every step)."""
    summary: dict[str, Any] = {**(header or {}), "status": "running", "steps": [
        {"name": s.name, "seam": s.seam, "status": "not run", "seconds": None, "outputs": {}} for s in steps]}
    t_all = time.perf_counter()

    def write() -> None:
        summary["seconds"] = round(time.perf_counter() - t_all, 1)
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")

    try:
        for i, (step, rec) in enumerate(zip(steps, summary["steps"]), start=1):
            ctx.current = step.name
            ctx.progress(f"[{i}/{len(steps)}] {step.name}: {step.seam} ...")
            t0 = time.perf_counter()
            rec["status"] = "running"
            write()
            try:
                rec["outputs"] = step.fn(ctx) or {}
                rec["status"] = "passed"
            except Exception as exc:  # noqa: BLE001 - the chain's boundary: one line, the traceback to a file
                rec["status"], rec["error"] = "failed", _one_line(exc)
                tb = ctx.log_path(f"{step.name}.traceback").with_suffix(".txt")
                tb.write_text(traceback.format_exc(), encoding="utf-8")
                rec["traceback"] = str(tb)
                summary["status"] = "failed"
                summary["failed_step"] = step.name
                summary["message"] = f"step {i}/{len(steps)} {step.name} failed ({step.seam}): {rec['error']}"
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            write()
            if rec["status"] == "failed":
                ctx.progress(f"smoke: {summary['message']}")
                return summary
            ctx.progress(f"[{i}/{len(steps)}] {step.name}: passed in {rec['seconds']:.1f}s")
        summary["status"] = "passed"
        return summary
    finally:
        for cleanup in reversed(ctx.cleanups):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - cleanups must all run
                ctx.progress(f"smoke: cleanup failed: {type(exc).__name__}: {exc}")
        write()
