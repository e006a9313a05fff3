"""Prefect flow `cim-ablations`: the paper's ablations of the reward, the same call as `cim ablate AXIS`.

One task per axis, run in order (sequential: the variants of an axis share their encoders and indexes, and
2 CPU cores gain nothing from running two at once); each axis is one MLflow parent run with a child run per
variant, and writes reports/ablations/<axis>.json|md|png. Same keys as `cim ablate`:

    python flows/ablations.py                                  # every axis, default variants
    python flows/ablations.py --axes beta --values 0.5,1,2 reward.top_k=3
    python flows/ablations.py --axes aggregate                 # sum vs GDPO: the pipeline's trained rows

The aggregate axis reads the pipeline's table and reward curves (run the pipeline first); it trains nothing.
"""
from __future__ import annotations

import argparse
import json

from prefect import flow, task

from cim.config import load_config


@task(retries=1, retry_delay_seconds=5)        # a retry resumes: finished variants are reused
def ablate_axis(params: str, overrides: list[str], axis: str, values: list[str] | None, train: bool,
                out_dir: str | None, work_dir: str | None) -> dict:
    from cim.stages import run_steps
    from cim.stages.ablate import ablate

    return ablate(params, overrides, axis, values, out_dir=out_dir, work_dir=work_dir,
                  train=run_steps if train else None)


@flow(name="cim-ablations", log_prints=True)
def ablations(params: str = "params.yaml", overrides: list[str] | None = None,
              axes: list[str] | None = None, values: list[str] | None = None, train: bool = False,
              out_dir: str | None = None, work_dir: str | None = None) -> dict:
    """``values``: the variants of a single axis (as `cim ablate --values`; encoders: [texts, images]);
    ``out_dir``, ``work_dir``: ``ablate.*``'s by default."""
    from cim.ablate.axes import AXES

    overrides = list(overrides or [])
    load_config(params, overrides)   # fail fast on a bad key
    axes = list(axes or AXES)
    return {axis: ablate_axis(params, overrides, axis, values if len(axes) == 1 else None,
                              train and axis == "components", out_dir, work_dir) for axis in axes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--axes", help="comma-separated (default: components,scale,encoders,beta,aggregate)")
    ap.add_argument("--values", help="comma-separated variants of the one axis given (as cim ablate --values)")
    ap.add_argument("--train", action="store_true", help="components: also train a captioner per variant")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_intermixed_args()
    axes = a.axes.split(",") if a.axes else None
    values = a.values.split(",") if a.values else None
    result = ablations(a.params, list(a.overrides), axes, values, a.train)
    print(json.dumps({k: v["rows"] for k, v in result.items()}, indent=1, default=str))


if __name__ == "__main__":
    main()
