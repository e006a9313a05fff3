"""The corpus index: sharded, resumable embedding of a manifest; FAISS search; metadata checks.

>>> from cim.index import build_index, CorpusIndex
>>> build_index(cfg, "data/world/corpus.jsonl", "data/index", sources="data/world/sources.jsonl")
>>> index = CorpusIndex.load("data/index", expect={"text": text_encoder.describe()})
>>> scores, rows = index.search(text_encoder.encode(captions), k=5)

Layout and guarantees: docs/architecture.md and docs/index.md.
"""
from cim.index.build import build_index
from cim.index.recall import recall_at_k
from cim.index.search import build_faiss_index, exact_topk
from cim.index.store import CorpusIndex, IndexCorrupt, IndexMismatch

__all__ = ["build_index", "CorpusIndex", "IndexMismatch", "IndexCorrupt", "recall_at_k", "build_faiss_index",
           "exact_topk"]
