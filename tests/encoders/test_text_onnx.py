"""encoders.text.backend=onnx: the packaged MiniLM exported offline and run by ONNX Runtime gives the torch
backend's embeddings and rewards (docs/index.md)."""
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_onnx_backend_matches_torch_embeddings_and_rewards(tiny_cfg, tiny_scorer, tiny_world):
    from omegaconf import OmegaConf

    from cim.encoders import build_text_encoder
    from cim.reward.scorer import Scorer

    onnx = build_text_encoder(OmegaConf.merge(tiny_cfg.encoders.text, {"backend": "onnx", "device": "cpu"}))
    assert onnx.describe()["backend"] == "onnx" and "backend" not in tiny_scorer.text_encoder.describe()
    rows = [json.loads(line) for line in open(tiny_world / "bench_captions.jsonl")][:24]
    items = [{"caption": r["caption"], "image_id": r["image_id"]} for r in rows]
    texts = [it["caption"] for it in items] + ["", "a much longer caption " * 40]
    a, b = tiny_scorer.text_encoder.encode(texts), onnx.encode(texts)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    s = tiny_scorer
    scorer = Scorer(s.index, onnx, top_k=s.top_k, decay=s.decay, beta=s.beta, mode=s.mode,
                    exclude_source=s.exclude_source)
    got, want = scorer.score(items), s.score(items)
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) < 1e-3
    assert sum(g["retrieved"] == w["retrieved"] for g, w in zip(got, want)) >= len(items) - 2
