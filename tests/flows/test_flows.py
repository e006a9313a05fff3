"""The Prefect index flow runs end to end without a server, and the verify stage logs to MLflow."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def prefect_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path


@pytest.mark.slow
def test_index_flow_end_to_end(prefect_home, tmp_path):
    # A subprocess, as a user runs it: Prefect's temporary server logs at interpreter exit.
    overrides = TINY_OVERRIDES + [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                  f"tracking.artifact_dir={tmp_path / 'artifacts'}"]
    params = tmp_path / "params.yaml"
    params.write_text("# empty: the built-in defaults\n")
    proc = subprocess.run([sys.executable, str(ROOT / "flows" / "index_corpus.py"), "--params",
                           str(params), *overrides], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
                               "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Finished in state Completed" in proc.stdout + proc.stderr
    # a flow run writes under runs/<flow-run>/, never into the DVC workspace
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()
    (run,) = (tmp_path / "runs").iterdir()
    index_meta = json.loads((run / "data/index/meta.json").read_text())
    assert index_meta["rows"] == 120
    metrics = json.loads((run / "reports/verify/metrics.json").read_text())
    assert metrics["n_captions"] == 40 and metrics["n_failed"] == 0
    assert (run / "reports/verify/scores_by_level.png").stat().st_size > 1000

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cim"], output_format="list")
    verify = [r for r in runs if r.data.tags.get("stage") == "verify"]
    assert verify and "score.spearman_pooled" in verify[0].data.metrics
    # the run covers the work (building the scorer loads MiniLM: seconds), not only the logging (~0.1 s)
    assert verify[0].info.end_time - verify[0].info.start_time > 1000
    assert verify[0].data.params["reward.top_k"] == "5"
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(verify[0].info.run_id, "verify")]
    assert "verify/scores_by_level.png" in artifacts
