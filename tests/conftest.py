"""Shared fixtures: a tiny generated world and a real index over it (MiniLM + EfficientNet-Lite0, 64 px).

Built once per test session (about 10-20 s on 2 cores) and shared by every test that needs a real scorer.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Stages log to MLflow: keep the test session's runs out of the working tree's mlruns/.
if "MLFLOW_TRACKING_URI" not in os.environ:
    import tempfile

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp(prefix='cim-mlflow-')}/mlflow.db"

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

TINY_OVERRIDES = [
    "world.n_corpus=120", "world.n_train=12", "world.n_bench=10", "world.image_size=64",
    "encoders.image.image_size=64", "index.shard_size=50",
]


def pytest_collection_modifyitems(config, items):
    import torch

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
