"""The `cim-pipeline` deployment, for real: a Prefect server on loopback and a process worker (both started and
stopped here, bounded in time), the pools from prefect.yaml's header, `prefect deploy --all`, one run of the
pipeline on a tiny world to completion. The run's result is the table (4 rows), its markdown artifact holds
the table and the MLflow link, and the worker's checkout is byte-for-byte untouched outside runs/. Then
`dvc repro` of the same configuration in that checkout: the same stage functions, so the same table."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.tiny import PAPER_ROWS, TINY, params_with_rows

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEADLINE_S = 900          # the whole test: server, deploy, the pipeline run
# reads the finished run's state, result and artifacts through the API (a client in its own process)
INSPECT = """
import asyncio, json, sys
from uuid import UUID
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

async def main(run_id):
    async with get_client() as c:
        run = await c.read_flow_run(UUID(run_id))
        arts = await c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        result = run.state.result(raise_on_failure=False) if run.state.is_completed() else None
        if hasattr(result, "__await__"):
            result = await result
        print(json.dumps({"state": run.state.type.value, "result": result,
                          "artifacts": [{"key": a.key, "type": a.type, "data": a.data} for a in arts]}, default=str))
asyncio.run(main(sys.argv[1]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _snapshot(checkout: Path) -> dict[str, str]:
    """sha256 of every file of the checkout but runs/ (a flow run's folder) and Python's caches."""
    out = {}
    for path in sorted(checkout.rglob("*")):
        rel = path.relative_to(checkout)
        if path.is_file() and rel.parts[0] != "runs" and "__pycache__" not in rel.parts:
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group (the worker's flow-run processes are in it)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_pipeline_deployment_on_a_real_server_and_worker(tmp_path):
    t0 = time.monotonic()
    remaining = lambda: max(1.0, DEADLINE_S - (time.monotonic() - t0))   # noqa: E731
    checkout = tmp_path / "checkout"        # the worker's checkout: what git would give it
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            (checkout / rel).write_bytes((ROOT / rel).read_bytes())
    # the paper's rows only (the guarded and GDPO rows run the same stage functions; 2 rows fewer to train twice)
    params_with_rows(checkout / "params.yaml", checkout / "params.yaml", PAPER_ROWS)
    before = _snapshot(checkout)
    assert "dvc.lock" in before and "reports/verify/metrics.json" in before

    port = _free_port()
    home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2",
               CIM_REPO=str(checkout), PYTHONPATH=str(checkout / "src"), PATH=f"{BIN}{os.pathsep}{env_path()}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    prefect = str(BIN / "prefect")

    def cli(*args: str, cwd: Path = checkout, timeout: float = 120) -> str:
        proc = subprocess.run([prefect, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=min(timeout, remaining()))
        assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      cwd=tmp_path, env=env, stdout=open(logs / "server.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        _wait_healthy(port, procs[0], logs / "server.log", timeout=min(120, remaining()))

        # the pool commands of prefect.yaml's header, exactly as written there, then `deploy --all`
        header = [line.lstrip("# ").strip() for line in (checkout / "prefect.yaml").read_text().splitlines()
                  if line.startswith("#") and "prefect work-pool create" in line]
        assert len(header) == 2, header
        for command in header:
            cli(*shlex.split(command)[1:])
        cli("--no-prompt", "deploy", "--all")
        names = json.loads(subprocess.run(
            [str(BIN / "python"), "-c", "import asyncio, json\nfrom prefect.client.orchestration import get_client\n"
             "async def m():\n  async with get_client() as c:\n    ds = await c.read_deployments()\n"
             "    fs = {f.id: f.name for f in await c.read_flows()}\n"
             "    print(json.dumps(sorted(f'{fs[d.flow_id]}/{d.name}' for d in ds)))\nasyncio.run(m())"],
            env=env, capture_output=True, text=True, check=True, timeout=60).stdout)
        assert {"cim-pipeline/cim-pipeline", "cim-index-corpus/cim-index-corpus", "cim-evaluate/cim-evaluate",
                "cim-train-grpo/cim-train-grpo-local", "cim-train-grpo/cim-train-grpo-verl",
                "cim-train-grpo/cim-train-grpo-trl"} <= set(names)

        procs.append(subprocess.Popen([prefect, "worker", "start", "--pool", "cim-cpu", "--limit", "1"],
                                      cwd=checkout, env=env, stdout=open(logs / "worker.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        overrides = TINY + ["train.local.n_eval=4", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                            f"tracking.artifact_dir={tmp_path / 'mlartifacts'}"]
        out = cli("deployment", "run", "cim-pipeline/cim-pipeline", "--params",
                  json.dumps({"overrides": overrides}), timeout=60)
        run_id = next(w for line in out.splitlines() if "UUID" in line for w in line.split() if w.count("-") == 4)
        state = _wait_finished(run_id, env, timeout=remaining() - 30, worker=procs[1], log=logs / "worker.log")
        assert state["state"] == "COMPLETED", (state, (logs / "worker.log").read_text()[-6000:])
    finally:
        for proc in reversed(procs):
            _stop(proc)

    table = state["result"]
    assert [r["captioner"] for r in table["rows"]] == ["sft", "cim", "cim-grc", "cim-qir"]
    assert table["baseline"] == "sft" and all("capture" in r for r in table["rows"])
    (art,) = [a for a in state["artifacts"] if a["key"] == "cim-pipeline"]
    assert art["type"] == "markdown" and "cim-qir" in art["data"] and "#/experiments/" in art["data"]

    import mlflow

    parent_id = art["data"].split("#/experiments/")[1].split("/runs/")[1].split(")")[0]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(parent_id)
    assert parent.data.tags["prefect.flow_run_id"] == run_id
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert {"train[sft]", "compare[world]"} <= {c.info.run_name for c in children}

    assert _snapshot(checkout) == before, "the flow run changed files of the worker's checkout"
    (folder,) = (checkout / "runs").iterdir()
    assert json.loads((folder / "reports/results/captioners.json").read_text())["rows"] == table["rows"]
    flow_s = time.monotonic() - t0

    # DVC runs the same stage functions (through `cim`): from the same configuration, the same table
    # (`dvc repro compare`: the table's stages; verify, audit and publish do not feed it)
    from omegaconf import OmegaConf

    params = OmegaConf.merge(OmegaConf.load(checkout / "params.yaml"), OmegaConf.from_dotlist(overrides))
    (checkout / "params.yaml").write_text(OmegaConf.to_yaml(params))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "checkout"]):
        subprocess.run([*git, *args], cwd=checkout, check=True, capture_output=True)
    repro = subprocess.run([str(BIN / "dvc"), "repro", "compare"], cwd=checkout,
                           env={**env, "DVC_NO_ANALYTICS": "1"}, capture_output=True, text=True, timeout=1200)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    dvc_table = json.loads((checkout / "reports/results/captioners.json").read_text())
    assert dvc_table["rows"] == table["rows"]
    print(f"test_prefect_pipeline: flow {flow_s:.0f} s, dvc repro {time.monotonic() - t0 - flow_s:.0f} s")


def env_path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the Prefect server did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _wait_finished(run_id: str, env: dict, timeout: float, worker: subprocess.Popen, log: Path) -> dict:
    end = time.monotonic() + timeout
    while True:
        proc = subprocess.run([str(BIN / "python"), "-c", INSPECT, run_id], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-3000:]
        state = json.loads(proc.stdout.strip().splitlines()[-1])
        if state["state"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        assert worker.poll() is None, log.read_text()[-6000:]
        if time.monotonic() > end:
            pytest.fail(f"flow run {run_id} still {state['state']} after {timeout:.0f} s:\n{log.read_text()[-6000:]}")
        time.sleep(3)
