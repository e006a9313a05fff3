"""What MLflow shows a newcomer: the per-captioner compare runs carry their params and a headline metric set
(the rest grouped by prefix), and the experiment's link opens on its runs in MLflow 3.17's UI (a real
``mlflow server`` on loopback, a fresh headless Chromium, a store holding the committed comparison)."""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "reports/results/captioners.json"


def _publish(tmp_path):
    """The committed comparison published into a fresh store, as one pipeline execution; returns (uri, exp id)."""
    from cim.config import load_config
    from cim.stages.publish import publish

    out = tmp_path / "results"
    out.mkdir()
    shutil.copy(TABLE, out / TABLE.name)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(ROOT / "params.yaml", [f"tracking.uri={uri}", f"tracking.artifact_dir={tmp_path / 'art'}"])
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "CIM_PARENT_RUN_ID", "MLFLOW_RUN_ID",
                                                  "CIM_PIPELINE_ID")}
    os.environ.update({"CIM_PIPELINE_ID": "ui-test", "MLFLOW_TRACKING_URI": uri})
    try:
        assert publish(cfg, out)["published"]
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    from mlflow import MlflowClient

    return uri, MlflowClient(uri).get_experiment_by_name(cfg.tracking.experiment).experiment_id, cfg


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _publish(tmp_path_factory.mktemp("mlflow-ui"))


def test_compare_runs_carry_params_and_grouped_metrics(store):
    from cim.eval.results import HEADLINE
    from mlflow import MlflowClient

    from cim.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    from cim.pipeline.variants import variant_config

    uri, exp_id, cfg = store
    c = MlflowClient(uri)
    assert c.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    table = json.loads(TABLE.read_text())
    for row in table["rows"]:
        run = c.search_runs([exp_id], f"tags.captioner = '{row['captioner']}'")[0]
        params, metrics = run.data.params, run.data.metrics
        assert params["captioner"] == row["captioner"] and params["n_seeds"] == str(row["n_seeds"])
        assert params["benchmark"] == table["benchmark"] and params["protocol"]
        if row["captioner"] != table["baseline"]:
            assert params["reward.mode"] == str(variant_config(cfg, row["captioner"]).reward.mode)
            assert params["protocol"] == (variant_config(cfg, row["captioner"]).protocol or "none")
            assert params["seeds"] == ",".join(map(str, cfg.pipeline.seeds))
        top = sorted(k for k in metrics if "/" not in k)
        assert top == sorted(HEADLINE)              # the headline, nothing else unprefixed
        assert {k.split("/")[0] for k in metrics if "/" in k} == {
            "mean", "delta", "ci95_low", "ci95_high", "delta_ci95_low", "delta_ci95_high"}
        for k in table["columns"]:                  # the same numbers as the table, only renamed
            assert metrics[k if k in HEADLINE else f"mean/{k}"] == pytest.approx(row[k], abs=1e-12)
            assert metrics[f"delta/{k}"] == pytest.approx(row[f"delta_{k}"], abs=1e-12)
            ci = row.get(f"{k}_ci95")
            if ci:
                assert (metrics[f"ci95_low/{k}"], metrics[f"ci95_high/{k}"]) == pytest.approx(tuple(ci), abs=1e-12)
            else:
                assert math.isnan(metrics[f"ci95_low/{k}"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_experiment_link_opens_on_the_runs_in_a_fresh_browser(store, tmp_path):
    from support.browser import page
    from cim.tracking import ui_url

    uri, exp_id, _ = store
    mlflow = Path(sys.executable).with_name("mlflow")
    if not mlflow.exists():
        pytest.skip("no mlflow executable beside the interpreter")
    port = _free_port()
    server = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{server}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(1)
        with page() as pg:
            pg.goto(ui_url(server, exp_id))
            pg.get_by_text("pipeline[ui-test]").first.wait_for(timeout=60000)
            assert "/runs" in pg.url and "workflowType=machine_learning" in pg.url
            body = pg.inner_text("body")
            assert "Run Name" in body and "No data available" not in body and "Agent versions" not in body
            assert pg.refused == [], pg.refused
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
