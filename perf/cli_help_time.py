"""Wall time of `cim <command> --help` from two source trees, interleaved in one run (a ratio, not a test).

Each run is a fresh interpreter (`python -m cim.cli <command> --help` with PYTHONPATH=<src>), as a user
starts it; also records which heavy libraries that run imported. Prints JSON and writes it with --out.

    python perf/cli_help_time.py --src before=/path/to/old/src --src after=src [--command score] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from perf_report import emit, uptime  # noqa: E402

HEAVY = ("torch", "transformers", "faiss", "mlflow", "sentence_transformers", "scipy", "numpy")
PROBE = ("import runpy, sys, json\n"
         "sys.argv = ['cim', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('cim.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print(json.dumps([m for m in %r if m in sys.modules]), file=sys.stderr)\n") % (HEAVY,)


def one_run(src: str, command: str) -> tuple[float, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, command, "--help"], env=env, capture_output=True, text=True,
                          timeout=300)
    seconds = time.perf_counter() - started
    if "usage: cim" not in proc.stdout:
        raise SystemExit(f"{src}: `cim {command} --help` did not print help: {proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", action="append", required=True, metavar="NAME=PATH", help="a source tree (repeatable)")
    ap.add_argument("--command", default="score")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    trees = dict(item.split("=", 1) for item in args.src)
    times: dict[str, list[float]] = {name: [] for name in trees}
    heavy: dict[str, list[str]] = {}
    for name, src in trees.items():  # warm the file cache once per tree
        heavy[name] = one_run(src, args.command)[1]
    for _ in range(args.repeats):
        for name, src in trees.items():
            times[name].append(one_run(src, args.command)[0])
    result = {"command": f"cim {args.command} --help", "repeats": args.repeats,
              "uptime": uptime(), "cpus": os.cpu_count(),
              "trees": {name: {"src": trees[name], "median_s": round(statistics.median(t), 3),
                               "min_s": round(min(t), 3), "max_s": round(max(t), 3), "heavy_imported": heavy[name]}
                        for name, t in times.items()}}
    names = list(trees)
    if len(names) == 2:
        a, b = (result["trees"][n]["median_s"] for n in names)
        result[f"{names[0]}_over_{names[1]}"] = round(a / b, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
