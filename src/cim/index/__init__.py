"""The corpus index: sharded, resumable embedding of a manifest; FAISS search; metadata checks.

>>> from cim.index import build_index, CorpusIndex
>>> build_index(cfg, "data/world/corpus.jsonl", "data/index", sources="data/world/sources.jsonl")
>>> index = CorpusIndex.load("data/index", expect={"text": text_encoder.describe()})
>>> scores, rows = index.search(text_encoder.encode(captions), k=5)

Layout and guarantees: docs/architecture.md and docs/index.md. The names are imported on first use, so
``import cim.index`` (``cim index --help``) loads no numerical library.
"""
import logging

from cim.lazy import lazy_exports

# faiss reports each instruction-set build it tries to load (~8 INFO lines in every stage's log); only its
# warnings matter to a user
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

_EXPORTS = {"build_index": "cim.index.build", "recall_at_k": "cim.index.recall",
            "build_faiss_index": "cim.index.search", "exact_topk": "cim.index.search",
            "CorpusIndex": "cim.index.store", "IndexCorrupt": "cim.index.store", "IndexMismatch": "cim.index.store"}
__all__ = ["build_index", "CorpusIndex", "IndexMismatch", "IndexCorrupt", "recall_at_k", "build_faiss_index",
           "exact_topk"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
