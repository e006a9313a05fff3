"""The Prefect index flow runs end to end without a server, and the verify stage logs to MLflow."""
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def prefect_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path


def test_index_flow_end_to_end(prefect_home, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "flows"))
    import index_corpus

    monkeypatch.chdir(tmp_path)
    overrides = TINY_OVERRIDES + [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                  f"tracking.artifact_dir={tmp_path / 'artifacts'}"]
    result = index_corpus.index_corpus(params=str(tmp_path / "absent.yaml"), overrides=overrides)
    assert result["index"]["rows"] == 120
    assert set(result["verify"]) == {"score", "grc", "qir"}
    metrics = json.loads((tmp_path / "reports/verify/metrics.json").read_text())
    assert metrics["n_captions"] == 40 and metrics["n_failed"] == 0
    assert (tmp_path / "reports/verify/scores_by_level.png").stat().st_size > 1000

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cim"], output_format="list")
    verify = [r for r in runs if r.data.tags.get("stage") == "verify"]
    assert verify and "score.spearman_pooled" in verify[0].data.metrics
    assert verify[0].data.params["reward.top_k"] == "5"
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(verify[0].info.run_id, "verify")]
    assert "verify/scores_by_level.png" in artifacts
