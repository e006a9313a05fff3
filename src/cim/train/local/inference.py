"""A trained local-backend captioner for inference: loaded from its checkpoint alone, greedy and batched.

``LocalModel.load(path)`` takes a run folder (``checkpoints/cim``: its newest checkpoint, ``latest.json``)
or one checkpoint folder (``checkpoints/cim/grpo_00100``). The checkpoint's fingerprint holds the model's
shape; the run folder (or the checkpoint's parent) holds ``tokenizer.json``. :meth:`LocalModel.generate`
captions image features (the index's source embeddings) greedily, ``batch_size`` at a time, under
:func:`cim.determinism.deterministic`: the same checkpoint and features give the same captions whatever
the batch size (tests/test_pipeline_loop.py checks it).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch

from cim.train.local.checkpoints import LATEST_FILE, STATE_FILE, load_checkpoint
from cim.train.local.model import Captioner, build_tiny_lm, load_smollm2
from cim.train.local.tokenizers import WordTokenizer


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(the run folder, the checkpoint folder) of ``path``: a run folder or one of its checkpoints."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path.parent, path
    latest = path / LATEST_FILE
    if not latest.is_file():
        raise FileNotFoundError(f"{path} is neither a local-backend run folder ({LATEST_FILE}) nor a checkpoint "
                                f"({STATE_FILE}); train it first (`cim train --backend local`)")
    return path, path / json.loads(latest.read_text(encoding="utf-8"))["checkpoint"]


class LocalModel:
    def __init__(self, policy: Captioner, tok, settings: dict, identity: dict):
        self.policy, self.tok, self.settings, self.identity = policy, tok, settings, identity

    @classmethod
    def load(cls, path: str | Path) -> "LocalModel":
        run_dir, ckpt = resolve_checkpoint(path)
        state = load_checkpoint(ckpt.parent, ckpt.name)
        fp = state["fingerprint"]
        lc = SimpleNamespace(**fp["local"])
        if lc.lm == "tiny":
            tok = WordTokenizer.load(run_dir / "tokenizer.json")
            lm = build_tiny_lm(lc, len(tok))
        else:
            lm, tok = load_smollm2()
        feat_dim = state["model"]["projector.0.weight"].shape[1]
        policy = Captioner(feat_dim, lm, lc.n_prefix)
        policy.load_state_dict(state["model"])
        policy.eval()
        digest = hashlib.sha256((ckpt / STATE_FILE).read_bytes()).hexdigest()[:16]
        identity = {"checkpoint": ckpt.name, "phase": state["phase"], "step": state["step"], "lm": lc.lm,
                    "reward_mode": fp["reward"]["mode"], "state_sha256": digest}
        return cls(policy, tok, {"index": fp["index"], "seed": fp["seed"], **fp["local"]}, identity)

    @property
    def max_new_tokens(self) -> int:
        return int(self.settings["max_new_tokens"])

    def generate(self, feats: np.ndarray, batch_size: int = 32, max_new_tokens: int | None = None,
                 threads: int = 2) -> list[str]:
        """Greedy captions of ``feats`` (N, D), ``batch_size`` rows at a time."""
        from cim.determinism import deterministic

        limit = min(int(max_new_tokens or self.max_new_tokens), self.max_new_tokens)
        out: list[str] = []
        with deterministic(int(self.settings["seed"]), threads), torch.no_grad():
            for start in range(0, len(feats), max(1, batch_size)):
                chunk = torch.from_numpy(np.asarray(feats[start:start + batch_size], dtype=np.float32))
                resp, _ = self.policy.sample(chunk, self.tok.bos_id, self.tok.eos_id, self.tok.pad_id, limit, 1.0,
                                             greedy=True)
                out.extend(self.tok.decode(r.tolist()) for r in resp)
        return out

    def generate_ids(self, index, ids: Sequence[str], batch_size: int = 32, max_new_tokens: int | None = None) -> list[str]:
        """Captions of the images ``ids`` from ``index``'s source embeddings (KeyError naming absent ids)."""
        feats, found = index.source_embeddings(list(ids))
        if not bool(np.all(found)):
            missing = [i for i, ok in zip(ids, found) if not ok]
            raise KeyError(f"no source embedding in the index for {', '.join(missing[:5])}")
        return self.generate(feats, batch_size, max_new_tokens)
