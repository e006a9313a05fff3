"""Shared fixtures: a tiny generated world and a real index over it (MiniLM + EfficientNet-Lite0, 64 px).

Built once per test session (about 10-20 s on 2 cores) and shared by every test that needs a real scorer.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Stages log to MLflow: keep the test session's runs out of the working tree's mlruns/. One store per process:
# xdist's workers inherit the controller's environment, so a store this file chose is replaced in each worker.
if os.environ.get("MLFLOW_TRACKING_URI", "") in ("", os.environ.get("CIM_TESTS_MLFLOW_URI")):
    os.environ["MLFLOW_TRACKING_URI"] = os.environ["CIM_TESTS_MLFLOW_URI"] = \
        f"sqlite:///{tempfile.mkdtemp(prefix='cim-mlflow-')}/mlflow.db"
# pytest-xdist (`make test`: -n 2 --dist loadgroup): each worker is its own process with its own session fixtures
# (tmp_path_factory, support.train_world's temp folder and the MLflow store above are per process); Prefect's
# ephemeral server keeps a SQLite database under PREFECT_HOME, so each worker gets its own.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    base = os.environ.get("PREFECT_HOME") or os.path.join(tempfile.gettempdir(), "cim-prefect-tests")
    os.environ["PREFECT_HOME"] = os.path.join(base, WORKER)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

TINY_OVERRIDES = [
    "world.n_corpus=120", "world.n_train=12", "world.n_bench=10", "world.image_size=64",
    "encoders.image.image_size=64", "index.shard_size=50",
]


# Under xdist a test module runs whole on one worker (its module fixtures are built once), except the modules of
# a named group here, which run together on one worker, one after the other: they must not overlap. (The
# scheduler below does the grouping from the test ids: xdist's own `xdist_group` marks do not reach the
# scheduler under pytest 9.2, which no longer lets xdist rename a test.)
GROUPS = {
    # local Ray clusters (index engine, verl's agent loop, the full-scale chain): one at a time on 2 cores
    "tests/index/test_index_ray.py": "ray", "tests/train/test_verl_agent_loop.py": "ray",
    "tests/e2e/test_smoke_full.py": "ray",
}
# Scheduled first, longest first (`--durations` on 2 cores), so the two workers start on the long chains and the
# short modules fill in around them; everything else follows in collection order.
LONGEST_FIRST = [
    # the slow chains (--durations of a serial `make test` on 2 cores: 291 s, 268 s, 158 s + the Ray tests, ...)
    "tests/e2e/test_prefect_pipeline.py", "ray", "tests/pipeline/test_pipeline.py",
    "tests/e2e/test_pipeline_loop.py", "tests/train/test_train_local.py", "tests/flows/test_stage_parity.py",
    "tests/perf/test_perf_scripts.py",
    # the longest modules of `-m "not slow"` (their sums under `-n 2`): `cim` subprocesses, the METEOR jar, audits
    "tests/cli/test_errors.py", "tests/eval/test_coverage.py", "tests/audit/test_audit.py",
    "tests/ablate/test_ablate.py", "tests/eval/test_eval_text_metrics.py", "tests/core/test_plugins.py",
    "tests/reward/test_scorer.py", "tests/service/test_service_replicas.py", "tests/index/test_index.py",
]


def _group(nodeid: str) -> str:
    module = nodeid.split("::")[0]
    return GROUPS.get(module, module)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`: one work unit per module, or per named group of modules (GROUPS)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ModuleGroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    import torch

    if WORKER and config.getvalue("loadgroup"):       # the same order on every worker: the units' order
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))   # stable: module order kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def defaults_params(tmp_path_factory) -> Path:
    """A params file that sets nothing, i.e. the built-in defaults (a --params file that is missing is an error)."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text("# empty: the built-in defaults\n")
    return path


@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory):
    from cim.config import load_config

    root = tmp_path_factory.mktemp("tiny")
    return load_config(None, TINY_OVERRIDES + [
        f"world.out_dir={root / 'world'}", f"index.out_dir={root / 'index'}",
        f"index.manifest={root / 'world' / 'corpus.jsonl'}", f"index.sources={root / 'world' / 'sources.jsonl'}",
        f"verify.out_dir={root / 'verify'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.artifact_dir={root / 'artifacts'}",
    ])


@pytest.fixture(scope="session")
def tiny_world(tiny_cfg):
    from cim.data.world import generate_world

    generate_world(tiny_cfg.world, progress=False)
    return Path(tiny_cfg.world.out_dir)


@pytest.fixture(scope="session")
def tiny_encoders(tiny_cfg):
    from cim.encoders import build_image_encoder, build_text_encoder

    return build_text_encoder(tiny_cfg.encoders.text), build_image_encoder(tiny_cfg.encoders.image)


@pytest.fixture(scope="session")
def tiny_index_dir(tiny_cfg, tiny_world, tiny_encoders):
    from cim.index import build_index

    return build_index(tiny_cfg, tiny_cfg.index.manifest, tiny_cfg.index.out_dir, tiny_cfg.index.sources,
                       progress=False, encoders=tiny_encoders)


@pytest.fixture(scope="session")
def tiny_scorer(tiny_cfg, tiny_index_dir, tiny_encoders):
    from cim.index import CorpusIndex
    from cim.reward.scorer import Scorer

    text, image = tiny_encoders
    index = CorpusIndex.load(tiny_index_dir, expect={"text": text.describe()}, device="cpu")
    r = tiny_cfg.reward
    return Scorer(index, text, image, top_k=r.top_k, decay=r.decay, beta=r.beta, mode=r.mode,
                  exclude_source=r.exclude_source)
