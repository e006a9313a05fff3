"""``PYTHONPATH=tests python -m e2e.full_path --out DIR``: the full-scale path end to end on CPU
(docs/full-scale.md; ``make smoke-full``).

Builds tiny randomly initialised models of the real architectures and a small SC-Captioner-format benchmark
into DIR, then runs, in order and in DIR: manifest -> index -> prepare-train -> verl config -> verl's
RLHFDataset -> cim serve -> verl's agent loop + reward loop -> one GRPO update -> verl checkpoint ->
verl.model_merger -> cim caption (untrained and trained) -> cim evaluate -> cim compare (the steps are
:data:`e2e.full_path.chain.STEPS`, in order). Stops at the first step that fails, with one line naming it.
``DIR/summary.json`` holds each step's name, status, seconds and outputs.
Exit code 0 when every step passed, 1 when one failed, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from e2e.full_path.chain import PROFILE, STEPS

    parser = argparse.ArgumentParser(
        prog="python -m e2e.full_path",
        description="Run the full-scale path end to end on CPU with tiny random models of the real architectures "
                    "(docs/full-scale.md). Writes DIR/summary.json; exit 0 when every step passed, 1 at the first "
                    "failing step.",
        epilog="steps: " + ", ".join(s.name for s in STEPS))
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for models, data, index, checkpoints and reports: new, empty, or the folder of "
                             "an earlier run (holding its summary.json), which is emptied first unless --keep")
    parser.add_argument("--profile", default=str(PROFILE), help="params file of the chain (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="do not empty --out first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in this process (default 2)")
    args = parser.parse_args(argv)
    profile = Path(args.profile).resolve()
    if not profile.is_file():
        print(f"python -m e2e.full_path: profile {profile} not found", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    if out.exists() and not args.keep:
        if not out.is_dir() or (any(out.iterdir()) and not (out / "summary.json").is_file()):
            print(f"python -m e2e.full_path: --out {out} is not empty and holds no summary.json of an earlier run; "
                  "pass a new or empty folder", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    _environment(out, args.threads)
    from e2e.full_path.runner import Context, run_steps

    ctx = Context(out, progress=lambda line: print(line, flush=True))
    ctx.state["profile"] = str(profile)
    from e2e.full_path.chain import free_port

    ctx.state["port"] = free_port()
    os.chdir(out)
    header = {"profile": str(profile), "out": str(out), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    summary = run_steps(STEPS, ctx, out / "summary.json", header=header)
    print(f"smoke: {summary['status']} in {summary['seconds']:.0f}s; summary: {out / 'summary.json'}", flush=True)
    return 0 if summary["status"] == "passed" else 1


def _environment(out: Path, threads: int) -> None:
    """Offline, this checkout's code (CIM's ``src`` and this harness's folder) in every subprocess and Ray
    worker, caches inside ``out``."""
    import cim

    src = str(Path(cim.__file__).resolve().parents[1])
    harness = str(Path(__file__).resolve().parents[__package__.count(".") + 1])   # the folder holding ``e2e``
    first = [src, harness]
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(first + [p for p in parts if p not in first])
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("HF_DATASETS_CACHE", str(out / "cache" / "hf-datasets")), ("RAY_DEDUP_LOGS", "0"),
                       ("OMP_NUM_THREADS", str(threads))):
        os.environ.setdefault(key, value)
    import torch

    torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
