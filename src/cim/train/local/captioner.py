"""``local``: a captioner the local CPU backend trained (``eval.captioner.name=local
eval.captioner.model=checkpoints/cim``), as a registered captioner like ``hf`` or ``file``.

The model sees image features, not pixels: the index's source embeddings of the benchmark images (the demo
world's held-out images are among the index's sources). It has no text prompt: the prompt is recorded on
each row but does not condition it. Decoding is greedy (``max_new_tokens`` capped at what the model was
trained for), batched (``eval.captioner.batch_size``) and deterministic (:mod:`cim.train.local.inference`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cim.eval.captioners import CAPTIONERS, Captioner, Decoding, as_items


class LocalCheckpointCaptioner(Captioner):
    def __init__(self, path: str | Path, batch_size: int = 8, max_new_tokens: int = 512, index_dir: str = ""):
        from cim.index import CorpusIndex
        from cim.train.local.inference import LocalModel

        self.path = Path(path)
        self.model = LocalModel.load(self.path)
        self.index = CorpusIndex.load(index_dir or self.model.settings["index"], device="cpu")
        self.batch_size = batch_size
        self.decoding = Decoding(max_new_tokens=min(max_new_tokens, self.model.max_new_tokens))

    @property
    def name(self) -> str:
        return f"local:{self.path.as_posix()}"

    def describe(self) -> dict:
        from dataclasses import asdict

        return {"name": self.name, "kind": "local", "model": {"path": self.path.as_posix(), **self.model.identity},
                "decoding": asdict(self.decoding), "conditioning": "image features (the index's source embeddings)"}

    def caption(self, images: Sequence[Any], prompt: str) -> list[str]:
        ids = [it.id for it in as_items(images)]
        return self.model.generate_ids(self.index, ids, self.batch_size, self.decoding.max_new_tokens)


@CAPTIONERS.register("local")
def _local(c) -> Captioner:
    if not c.model:
        raise ValueError("captioner 'local' needs eval.captioner.model: a local-backend run folder "
                         "(e.g. checkpoints/cim) or one of its checkpoints")
    return LocalCheckpointCaptioner(c.model, batch_size=c.batch_size, max_new_tokens=c.max_new_tokens)
