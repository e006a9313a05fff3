"""`cim ablate aggregate`: sum vs GDPO read from the pipeline's own trained rows (cim, cim-gdpo) -- a table the
real compare stage writes from hand-made captions, reward curves the local trainer's own writer writes -- with
the table's numbers and intervals per variant, the difference of means between them, a reward-curve figure,
one MLflow child run per variant, and one-line errors when the pipeline has not produced what it reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REFS = {"a": "A red circle on the green grass.", "b": "A small blue square next to a tree.",
        "c": "A yellow star above a wooden fence.", "d": "Two brown dogs run on the sand."}
LOOPY = {"a": "A red circle on the grass, a red circle on the grass.", "b": "A blue square next to a tree.",
         "c": "A star above a fence, a star above a fence.", "d": "Two dogs run on the sand."}
VAGUE = {"a": "A circle.", "b": "A square and a tree.", "c": "A star.", "d": "Dogs."}
RUNS = {"sft": VAGUE, "cim-s0": LOOPY, "cim-s1": REFS, "cim-gdpo-s0": REFS, "cim-gdpo-s1": VAGUE}
REWARDS = {"cim-s0": [1.0, 1.2, 1.4], "cim-s1": [1.0, 1.1, 1.2], "cim-gdpo-s0": [1.0, 1.3, 1.5],
           "cim-gdpo-s1": [1.1, 1.2, 1.3]}


def _overrides(tmp: Path) -> list[str]:
    return ["pipeline.seeds=[0,1]", f"pipeline.out_dir={tmp / 'results'}", f"pipeline.report_dir={tmp / 'train'}",
            f"pipeline.captions_dir={tmp / 'captions'}", f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
            f"tracking.artifact_dir={tmp / 'artifacts'}"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """What the pipeline leaves for the sft, cim and cim-gdpo rows: captions, the table, the reward curves."""
    from cim.config import load_config
    from cim.pipeline.variants import captions_path
    from cim.stages.compare import compare
    from cim.train.local.run import write_curves_csv

    tmp = tmp_path_factory.mktemp("aggregate")
    (tmp / "gt.json").write_text(json.dumps(REFS))
    bench = tmp / "hand.yaml"
    bench.write_text(f"name: hand\nformat: sc-captioner\ndata_dir: {tmp}\nfiles: {{references: gt.json}}\n"
                     "metrics: [capture, repetition]\ncapture_encoder: all-MiniLM-L6-v2\n")
    cfg = load_config(REPO / "params.yaml", _overrides(tmp))
    for run, caps in RUNS.items():
        path = captions_path(cfg, run)
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps({"image_id": k, "caption": v}) + "\n" for k, v in caps.items()))
    files = {row: [captions_path(cfg, r) for r in RUNS if r == row or r.rsplit("-s", 1)[0] == row]
             for row in ("sft", "cim", "cim-gdpo")}
    table = compare(cfg, files, str(bench), "sft", cfg.pipeline.out_dir, log=lambda *a: None, n_boot=100)
    for run, rewards in REWARDS.items():
        history = [{"step": i + 1, "train/reward_mean": r, "train/grc": r / 2} for i, r in enumerate(rewards)]
        write_curves_csv(history, Path(cfg.pipeline.report_dir) / run / "curves.csv")
    return tmp, {r["captioner"]: r for r in table["rows"]}


def test_the_report_is_the_tables_rows_and_the_runs_curves(pipeline):
    from cim.stages.ablate import ablate

    tmp, table = pipeline
    out = tmp / "reports"
    report = ablate(str(REPO / "params.yaml"), _overrides(tmp), "aggregate", out_dir=out, progress=False)
    written = json.loads((out / "aggregate.json").read_text())
    assert written["measurement"] == ["pipeline"] and "difference of two rows' means" in written["how"]
    rows = {r["variant"]: r for r in written["rows"]}
    assert [r["variant"] for r in written["rows"]] == ["sum", "gdpo"]
    assert rows["sum"]["row"] == "cim" and rows["gdpo"]["row"] == "cim-gdpo" and rows["gdpo"]["n_seeds"] == 2
    for variant, row in (("sum", "cim"), ("gdpo", "cim-gdpo")):
        r, t = rows[variant], table[row]
        for k in ("capture", "repetition"):
            assert r[k] == pytest.approx(t[k], abs=1e-6)
            assert [r[f"{k}.ci95_low"], r[f"{k}.ci95_high"]] == pytest.approx(t[f"{k}_ci95"], abs=1e-6)
            assert r[f"{k}.delta_sft"] == pytest.approx(t[f"delta_{k}"], abs=1e-6)
            assert [r[f"{k}.delta_sft.ci95_low"], r[f"{k}.delta_sft.ci95_high"]] == \
                pytest.approx(t[f"delta_{k}_ci95"], abs=1e-6)
    assert table["cim"]["repetition"] > 0                                 # LOOPY repeats itself
    for k in ("capture", "repetition"):
        assert rows["gdpo"][f"{k}.minus_sum"] == pytest.approx(table["cim-gdpo"][k] - table["cim"][k], abs=1e-6)
        assert f"{k}.minus_sum" not in rows["sum"]
    assert rows["sum"]["curve"] == {"step": [1, 2, 3], "reward": pytest.approx([1.0, 1.15, 1.3])}
    assert rows["gdpo"]["reward.final"] == pytest.approx(1.4)
    md = (out / "aggregate.md").read_text()
    assert "| sum | cim | 2 |" in md and "| gdpo | cim-gdpo | 2 |" in md
    assert "| CAPTURE − sum | Rep-3 ↓ − sum |" in md
    assert (out / "aggregate.png").stat().st_size > 5000
    dvc_shaped = json.loads((out / "aggregate.metrics.json").read_text())
    assert dvc_shaped["gdpo"]["capture.minus_sum"] == rows["gdpo"]["capture.minus_sum"]
    assert "curve" not in dvc_shaped["gdpo"] and "row" not in dvc_shaped["gdpo"]

    import mlflow

    client = mlflow.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cim").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == report["run_id"]]
    assert {(r.data.tags["ablate.variant"], r.data.tags["ablate.row"]) for r in children} == {
        ("sum", "cim"), ("gdpo", "cim-gdpo")}
    gdpo = next(r for r in children if r.data.tags["ablate.variant"] == "gdpo")
    assert gdpo.data.metrics["capture"] == pytest.approx(rows["gdpo"]["capture"])


def _cim(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "cim.cli", "ablate", *args, "--params", str(REPO / "params.yaml"),
                           "--out", str(tmp / "reports"), *_overrides(tmp)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cim ablate: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_what_the_pipeline_has_not_produced_is_a_one_line_error(pipeline, tmp_path):
    from cim.errors import ConfigError, InputError
    from cim.stages.ablate import ablate

    tmp, _ = pipeline
    empty = ["pipeline.seeds=[0,1]", f"pipeline.out_dir={tmp_path / 'none'}",
             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    with pytest.raises(InputError, match="captioners.json does not exist: run the comparison first"):
        ablate(str(REPO / "params.yaml"), empty, "aggregate", out_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match="has no row cim-grc"):              # a variant whose row was not compared
        ablate(str(REPO / "params.yaml"), [*_overrides(tmp), "reward.mode=grc"], "aggregate", ["sum"],
               out_dir=tmp_path, progress=False)
    # every row over a base that aggregates with gdpo: none trains with the sum
    with pytest.raises(ConfigError, match="no pipeline.variants row trains with the reward of reward.aggregate=sum"):
        ablate(str(REPO / "params.yaml"), [*_overrides(tmp), "reward.aggregate=gdpo"], "aggregate", ["sum"],
               out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="trains nothing itself"):
        ablate(str(REPO / "params.yaml"), _overrides(tmp), "aggregate", out_dir=tmp_path, train=lambda *a, **k: {},
               progress=False)
    assert "mean is not one of sum, gdpo" in _one_line(_cim(tmp, "aggregate", "--values", "mean"))
    curve = Path(tmp / "train" / "cim-gdpo-s1" / "curves.csv")
    saved = curve.read_bytes()
    curve.unlink()
    try:
        assert "cim-gdpo-s1/curves.csv does not exist: train the row first" in _one_line(_cim(tmp, "aggregate"))
    finally:
        curve.write_bytes(saved)
