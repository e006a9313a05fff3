"""``encoders.text.backend=onnx``: a sentence-transformers model's transformer run by ONNX Runtime on the CPU.

The transformer (the model's first module) is exported once with ``torch.onnx.export`` from the installed
weights (nothing is downloaded) into ``cache_dir()/onnx/<key>.onnx`` (atomic write; the key hashes the model
folder's files and the torch / onnxruntime versions). The sentence-transformers tokenizer, mean or CLS
pooling and L2 normalisation run here as in sentence-transformers, texts sorted by length within a call so
batches pad little. Models with other modules (Dense layers, other poolings) are refused with a ConfigError.
Needs ``onnxruntime`` and ``onnx`` (pinned in requirements.lock).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from cim.errors import ConfigError

__all__ = ["OnnxTransformer"]

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _model_key(folder: Path) -> str:
    import onnxruntime
    import torch

    h = hashlib.sha256(f"{torch.__version__}|{onnxruntime.__version__}".encode())
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors", ".bin",
                                                                                  ".txt", ".model")):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f"{f.stat().st_size}".encode())
    return h.hexdigest()[:20]


class OnnxTransformer:
    """Embeds texts like ``SentenceTransformer.encode`` (then L2-normalised by the caller), with the
    transformer in an ONNX Runtime session of ``threads`` intra-op threads."""

    def __init__(self, model, folder: Path, threads: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("encoders.text.backend=onnx needs onnxruntime: pip install onnxruntime==1.32.0 onnx==1.23.2"
                              " (or use encoders.text.backend=torch)") from None
        kinds = [type(m).__name__ for m in model]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            raise ConfigError(f"encoders.text.backend=onnx supports Transformer + Pooling (+ Normalize) models; this "
                              f"one has {' + '.join(kinds)}: use encoders.text.backend=torch")
        pooling = model[1].get_config_dict()
        mode = pooling.get("pooling_mode")                  # sentence-transformers 6; older: boolean flags
        if mode is None:
            flags = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
            mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(flags[0]) \
                if len(flags) == 1 else None
        if mode not in ("mean", "cls"):
            raise ConfigError(f"encoders.text.backend=onnx supports mean or CLS pooling, not {pooling}")
        self.pooling = mode
        self.tokenizer, self.max_seq_length = model.tokenizer, int(model.max_seq_length)
        path = self._export(model, folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def _export(self, model, folder: Path) -> Path:
        import torch

        from cim.io import atomic_write, cache_dir

        path = Path(cache_dir()) / "onnx" / f"{Path(folder).name}-{_model_key(Path(folder))}.onnx"
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        hf = model[0].auto_model

        example = self.tokenizer(["a red circle", "two small blue squares on the left"], padding=True,
                                 return_tensors="pt")
        names = [n for n in _INPUTS if n in example]     # MPNet has no token_type_ids

        class Wrapped(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *tensors):
                return self.inner(**dict(zip(names, tensors))).last_hidden_state

        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Wrapped(hf).eval(), tuple(example[n] for n in names), buf, dynamo=False,
                              input_names=names, output_names=["last_hidden_state"], opset_version=17,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in (*names, "last_hidden_state")})
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        return path

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_seq_length,
                                 return_tensors="np")
            feed = {n: np.asarray(enc[n], dtype=np.int64) for n in self.inputs}
            hidden = self.session.run(None, feed)[0]
            if self.pooling == "cls":
                parts.append(hidden[:, 0])
            else:
                mask = feed["attention_mask"][:, :, None].astype(np.float32)
                parts.append((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9))
        out = np.empty((len(texts), parts[0].shape[1]), np.float32)
        out[order] = np.concatenate(parts, axis=0)
        return out
