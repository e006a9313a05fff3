"""DVC (which runs `cim index`) and the Prefect index flow run one stage function: from one manifest they write
byte-identical index files, and both record the stage in MLflow (the flow's task used to call the library
bare: no seeding, no run). The pipeline flow's table against `dvc repro`'s: tests/e2e/test_prefect_pipeline.py."""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["world.n_corpus=60", "world.n_train=6", "world.n_bench=4", "world.image_size=48",
        "encoders.image.image_size=48", "index.shard_size=25"]


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_the_index_flow_and_cim_index_write_the_same_bytes(tmp_path, monkeypatch):
    import subprocess

    import mlflow

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    db = tmp_path / "mlflow.db"
    overrides = [*TINY, f"tracking.uri=sqlite:///{db}", f"tracking.artifact_dir={tmp_path / 'art'}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONPATH": str(REPO / "src")}
    env.pop("CIM_PIPELINE_ID", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "cim.cli", *a, *overrides], env=env, cwd=tmp_path,  # noqa
                                    capture_output=True, text=True, timeout=600)
    assert run("prepare", "--no-progress").returncode == 0
    # the flow, in a process of its own (a temporary Prefect API): it writes under runs/<flow-run>/data/index
    code = ("import sys; sys.path.insert(0, %r); from index_corpus import index_corpus; "
            "index_corpus('params.yaml', %r, manifest='data/world/corpus.jsonl', sources='data/world/sources.jsonl', "
            "skip_verify=True)") % (str(REPO / "flows"), overrides)
    flow = subprocess.run([sys.executable, "-c", code], env={**env, "PREFECT_HOME": str(tmp_path / "prefect")},
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert flow.returncode == 0, flow.stderr[-4000:]
    (flow_index,) = (tmp_path / "runs").glob("*/data/index")
    # the command, into a folder at the same depth (meta.json records the manifest's path relative to it)
    cli = run("index", "--out", "runs/cli/data/index", "--no-progress")
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert _files(flow_index) == _files(tmp_path / "runs/cli/data/index")
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("cim").experiment_id], "tags.stage = 'index'")
    assert len(runs) == 2 and len({r.data.tags["data.index_sha256"] for r in runs}) == 1
