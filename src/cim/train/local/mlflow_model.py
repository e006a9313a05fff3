"""The local backend's final captioner as an MLflow model (pyfunc flavour), with its resolved config.

``log_captioner(cfg, run_dir)`` (called inside the training run) logs the model, named after the run folder
(``cim-grc-s1``), tagged with its checkpoint's hash (``cim.state_sha256``, what a captions file's meta names,
so the comparison's metrics reach it: :mod:`cim.stages.publish`): the newest checkpoint, its tokenizer and
``config.yaml``; ``mlflow.pyfunc.load_model(uri).predict(df)`` takes a DataFrame with a
``features`` column (one image-feature vector per row, the index's source embeddings) and returns the greedy
captions (:class:`cim.train.local.inference.LocalModel`).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow.pyfunc

STATE_TAG = "cim.state_sha256"


class LocalCaptionerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from cim.train.local.inference import LocalModel

        self.model = LocalModel.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None) -> list[str]:
        import numpy as np

        feats = np.stack([np.asarray(f, dtype=np.float32) for f in model_input["features"]])
        return self.model.generate(feats, batch_size=int((params or {}).get("batch_size", 32)))


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "numpy", "mlflow")]


def log_captioner(cfg, run_dir: str | Path) -> str:
    """Log ``run_dir``'s newest checkpoint as the active run's ``captioner`` model; returns its model URI."""
    from omegaconf import OmegaConf

    from cim.train.local.checkpoints import LATEST_FILE
    from cim.train.local.inference import LocalModel, resolve_checkpoint

    run_dir, ckpt = resolve_checkpoint(run_dir)
    identity = LocalModel.load(ckpt).identity
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        shutil.copytree(ckpt, folder / ckpt.name)
        shutil.copyfile(run_dir / "tokenizer.json", folder / "tokenizer.json")
        shutil.copyfile(run_dir / LATEST_FILE, folder / LATEST_FILE)
        config = Path(tmp) / "config.yaml"
        config.write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
        info = mlflow.pyfunc.log_model(name=run_dir.name, python_model=LocalCaptionerModel(),
                                       artifacts={"checkpoint": str(folder), "config": str(config)},
                                       pip_requirements=_requirements(), metadata=identity,
                                       tags={STATE_TAG: identity["state_sha256"], "cim.checkpoint": identity["checkpoint"],
                                             "cim.reward_mode": identity["reward_mode"]})
    return info.model_uri
