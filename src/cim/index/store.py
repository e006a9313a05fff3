"""The built index on disk: loading with checks, searching, image-table and source-embedding lookups."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cim.errors import CimError, ConfigError
from cim.index.search import configure_faiss_index, exact_topk, exact_topk_torch, faiss_search, faiss_vectors

__all__ = ["CorpusIndex", "IndexMismatch", "IndexCorrupt", "FORMAT", "sha256_file", "sha256_array",
           "transform_images"]

FORMAT = 2          # 2: the image identity is always recorded (cim.index.identity)


class IndexCorrupt(CimError, RuntimeError):
    """The index folder is incomplete or a file does not match what meta.json recorded."""


class IndexMismatch(ConfigError):
    """The index was built with other encoders than the caller means to use (a ``ValueError``, and a
    :class:`cim.errors.ConfigError`: the message says which setting to change).

    ``field`` is the dotted key (``encoders.text.model``), ``index_value`` what the index recorded,
    ``expected`` what the caller's encoder describes.
    """

    def __init__(self, message: str, field: str, index_value: Any, expected: Any):
        super().__init__(message)
        self.field, self.index_value, self.expected = field, index_value, expected


def sha256_file(path: str | Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def sha256_array(arr: np.ndarray) -> str:
    """sha256 of dtype, shape and the C-order bytes of ``arr``."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def transform_images(raw: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Optional centring (subtract ``mean``), then L2 normalisation, in float32."""
    x = np.asarray(raw, dtype=np.float32)
    if mean is not None:
        x = x - mean.astype(np.float32)[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def faiss_gpu_available() -> bool:
    try:
        import faiss
    except ImportError:  # pragma: no cover
        return False
    return hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


SEARCH_BACKENDS = ("torch", "faiss")


def require_faiss_gpu(device: str) -> None:
    """ConfigError unless FAISS can search on ``device`` (faiss-gpu installed and a GPU visible)."""
    from cim.errors import ConfigError

    if faiss_gpu_available():
        return
    try:
        import faiss

        have = f"the installed faiss is {getattr(faiss, '__version__', '?')} without GPU support"
        if hasattr(faiss, "StandardGpuResources"):
            have = "faiss-gpu is installed but sees no GPU"
    except ImportError:  # pragma: no cover
        have = "faiss is not installed"
    raise ConfigError(f"index.search_backend=faiss on {device} needs faiss-gpu ({have}): on the GPU machine run "
                      "`pip uninstall -y faiss-cpu && pip install 'cim[gpu]'` (faiss-gpu==1.15.1, CUDA 12), "
                      "or use index.search_backend=torch (exact, the default)")


class CorpusIndex:
    """A loaded (or in-memory) corpus index.

    ``ids`` corpus ids in row order, ``row_of`` their rows, ``image_table`` (N, D) float16 image embeddings
    (centred if the index was built so, L2-normalised), ``meta`` the parsed meta.json.
    ``search`` runs on ``search_device``. ``search_backend="torch"`` (default): exact search on CUDA uses torch
    (deterministic, see search.py); ivf uses FAISS GPU when faiss-gpu is installed; hnsw searches on the CPU.
    ``search_backend="faiss"``: FAISS's own kernels (exact: a flat inner-product index) on the CPU, or on
    CUDA through faiss-gpu, which must then be installed (:func:`require_faiss_gpu`); fast, but a query's
    last bits (and so near-ties) can depend on its batch.
    """

    def __init__(self, ids: Sequence[str], text_vectors: np.ndarray | None, image_table: np.ndarray, *,
                 kind: str = "exact", faiss_index: Any = None, faiss_params: dict | None = None,
                 image_mean: np.ndarray | None = None, sources_ids: Sequence[str] = (),
                 sources_emb: np.ndarray | None = None, meta: dict | None = None, device: str = "cpu",
                 path: Path | None = None, search_backend: str = "torch"):
        if search_backend not in SEARCH_BACKENDS:
            raise ValueError(f"search_backend must be one of {', '.join(SEARCH_BACKENDS)}, got {search_backend!r}")
        self.search_backend = search_backend
        self.ids = list(ids)
        self.row_of = {rid: i for i, rid in enumerate(self.ids)}
        if len(self.row_of) != len(self.ids):
            raise ValueError("corpus ids are not unique")
        self.kind = kind
        self.path = path
        self.meta = meta or {}
        self.image_table = np.ascontiguousarray(image_table, dtype=np.float16)
        self.image_mean = None if image_mean is None else np.asarray(image_mean, dtype=np.float32)
        self._faiss = faiss_index
        self._faiss_params = dict(faiss_params or {})
        self._text = None if text_vectors is None else np.ascontiguousarray(text_vectors, dtype=np.float32)
        if self._text is None and faiss_index is None:
            raise ValueError("need text vectors or a FAISS index")
        self.text_dim = int(self._text.shape[1] if self._text is not None else faiss_index.d)
        n_text = self._text.shape[0] if self._text is not None else faiss_index.ntotal
        if n_text != len(self.ids) or self.image_table.shape[0] != len(self.ids):
            raise ValueError(f"rows disagree: {len(self.ids)} ids, {n_text} text vectors, "
                             f"{self.image_table.shape[0]} image rows")
        self.image_dim = int(self.image_table.shape[1])
        self.sources_ids = list(sources_ids)
        self._source_row = {sid: i for i, sid in enumerate(self.sources_ids)}
        from cim.index.identity import ImageIdentity

        self.identity = ImageIdentity.distinct(len(self.ids), self.sources_ids)   # load() sets the recorded one
        self.sources_emb = (np.zeros((0, self.image_dim), np.float32) if sources_emb is None
                            else np.ascontiguousarray(sources_emb, dtype=np.float32))
        self._xmax: float | None = None
        self.search_device = "cpu"
        self._gpu_text = None
        self._gpu_faiss = None
        self._faiss_backend = None   # search_backend=faiss: the FAISS index searched (flat for exact; CPU or GPU)
        self._place(device)

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, ids: Sequence[str], text_emb: np.ndarray, image_table: np.ndarray, *,
                    kind: str = "exact", device: str = "cpu", search_backend: str = "torch",
                    **faiss_kwargs) -> "CorpusIndex":
        """An in-memory index over given arrays (tests, benchmarks, recall studies); nothing is written."""
        from cim.index.search import build_faiss_index

        text_emb = np.ascontiguousarray(text_emb, dtype=np.float32)
        index, params = (None, {}) if kind == "exact" else build_faiss_index(text_emb, kind, **faiss_kwargs)
        return cls(ids, text_emb, image_table, kind=kind, faiss_index=index, faiss_params=params, device=device,
                   search_backend=search_backend)

    @classmethod
    def load(cls, out_dir: str | Path, expect: dict | None = None, device: str = "auto", *,
             verify: bool = True, nprobe: int | None = None, ef_search: int | None = None,
             search_backend: str = "torch") -> "CorpusIndex":
        """Load an index folder written by :func:`cim.index.build_index`.

        Checks that meta.json exists (it is written last, so its absence means an unfinished build), that every
        file it lists is present with the recorded sha256 (``verify=False`` skips hashing), and that row
        counts and dimensions agree. ``expect`` — ``{"text": text_encoder.describe(), "image": ...}``, either
        key optional — must match the encoders recorded in meta.json field by field, else IndexMismatch.
        ``nprobe`` / ``ef_search`` override the approximate index's search parameters; ``search_backend``:
        see the class.
        """
        import faiss

        root = Path(out_dir)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise IndexCorrupt(f"{root}: no meta.json, so this is not a finished index (meta.json is written last; "
                               "an interrupted build resumes with `cim index`)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexCorrupt(f"{meta_path}: unreadable ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise IndexCorrupt(f"{meta_path}: format {meta.get('format') if isinstance(meta, dict) else '?'}, "
                               f"this code reads format {FORMAT}; rebuild the index")
        if expect:
            check_expected(meta, expect, root)
        files = meta.get("checksums", {}).get("files", {})
        for name, digest in files.items():
            path = root / name
            if not path.is_file():
                raise IndexCorrupt(f"{root}: {name} is missing (listed in meta.json); rebuild the index")
            if verify and sha256_file(path) != digest:
                raise IndexCorrupt(f"{path}: sha256 does not match meta.json (the file changed or is corrupted); "
                                   "rebuild the index")
        for name in ("ids.json", "image_table.npy", "text.faiss"):
            if name not in files:
                raise IndexCorrupt(f"{meta_path}: no checksum for {name}")
        rows, dims, kind = meta["rows"], meta["dims"], meta["kind"]
        ids = json.loads((root / "ids.json").read_text(encoding="utf-8"))
        if not isinstance(ids, list) or len(ids) != rows:
            raise IndexCorrupt(f"{root}/ids.json: {len(ids) if isinstance(ids, list) else '?'} ids, meta.json says {rows}")
        table = np.load(root / "image_table.npy", allow_pickle=False)
        if table.shape != (rows, dims["image"]) or table.dtype != np.float16:
            raise IndexCorrupt(f"{root}/image_table.npy: {table.dtype} {table.shape}, meta.json says "
                               f"float16 ({rows}, {dims['image']})")
        index = faiss.read_index(str(root / "text.faiss"))
        if index.ntotal != rows or index.d != dims["text"]:
            raise IndexCorrupt(f"{root}/text.faiss: {index.ntotal} x {index.d}, meta.json says {rows} x {dims['text']}")
        text = faiss_vectors(index, kind) if kind == "exact" or verify else None
        if text is not None and sha256_array(text) != meta["checksums"]["arrays"]["text_emb"]:
            raise IndexCorrupt(f"{root}/text.faiss: its vectors do not match meta.json's text_emb checksum")
        mean = None
        if meta["centering"]["enabled"]:
            mean = np.load(root / "image_mean.npy", allow_pickle=False)
            if mean.shape != (dims["image"],):
                raise IndexCorrupt(f"{root}/image_mean.npy: shape {mean.shape}, expected ({dims['image']},)")
        sources_ids, sources_emb = [], None
        if meta.get("sources"):
            sources_ids = json.loads((root / "sources_ids.json").read_text(encoding="utf-8"))
            sources_emb = np.load(root / "sources_emb.npy", allow_pickle=False)
            if sources_emb.shape != (len(sources_ids), dims["image"]):
                raise IndexCorrupt(f"{root}/sources_emb.npy: shape {sources_emb.shape}, expected "
                                   f"({len(sources_ids)}, {dims['image']})")
        params = dict(meta.get("faiss") or {})
        if nprobe is not None:
            params["nprobe"] = int(nprobe)
        if ef_search is not None:
            params["ef_search"] = int(ef_search)
        configure_faiss_index(index, kind, params)
        loaded = cls(ids, text if kind == "exact" else None, table, kind=kind,
                     faiss_index=None if kind == "exact" else index, faiss_params=params, image_mean=mean,
                     sources_ids=sources_ids, sources_emb=sources_emb, meta=meta, device=device, path=root,
                     search_backend=search_backend)
        from cim.index.identity import IDENTITY_FILES, load_identity   # which rows show the same image

        missing = [n for n in IDENTITY_FILES if not (root / n).is_file()]
        if missing:
            raise IndexCorrupt(f"{root}: no image identity ({', '.join(missing)} missing); rebuild the index")
        identity = load_identity(root, sources_ids)
        if identity.groups.shape != (rows,) or identity.source_groups.shape != (len(sources_ids),) or \
                identity.digests.ndim != 2 or identity.digests.shape[1] != 32 or \
                (rows and identity.groups.max() >= len(identity.digests)):
            raise IndexCorrupt(f"{root}: image identity files disagree with the index ({identity.groups.shape} groups "
                               f"for {rows} rows, {identity.source_groups.shape} for {len(sources_ids)} sources); "
                               "rebuild the index")
        loaded.identity = identity
        return loaded

    def _place(self, device: str) -> None:
        from cim.encoders.base import resolve_device

        dev = resolve_device(device)
        if self.search_backend == "faiss":
            self._place_faiss(dev)
            return
        if dev == "cpu":
            return
        if self.kind == "exact":
            import torch

            self._gpu_text = torch.from_numpy(self._text).to(dev)
            self.search_device = dev
        elif self.kind == "ivf" and faiss_gpu_available():
            import faiss

            res = faiss.StandardGpuResources()
            gpu_id = int(dev.split(":")[1]) if ":" in dev else 0
            self._gpu_faiss = faiss.index_cpu_to_gpu(res, gpu_id, self._faiss)
            self._gpu_faiss_res = res
            try:
                faiss.GpuParameterSpace().set_index_parameter(self._gpu_faiss, "nprobe",
                                                              int(self._faiss_params.get("nprobe", 1)))
            except Exception:  # pragma: no cover - older faiss: attribute instead
                self._gpu_faiss.nprobe = int(self._faiss_params.get("nprobe", 1))
            self.search_device = dev
        # hnsw (and ivf without faiss-gpu) stay on the CPU

    def _place_faiss(self, dev: str) -> None:
        import faiss

        from cim.errors import ConfigError

        if dev != "cpu":
            require_faiss_gpu(dev)
            if self.kind == "hnsw":
                raise ConfigError("index.search_backend=faiss: FAISS has no GPU kernels for hnsw; use index.kind=exact "
                                  "or ivf on the GPU, or index.device=cpu")
        index = self._faiss
        if self.kind == "exact":
            index = faiss.IndexFlatIP(self.text_dim)
            index.add(self.text_vectors())
        if dev != "cpu":
            self._gpu_faiss_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_faiss_res, int(dev.split(":")[1]) if ":" in dev else 0, index)
            if self.kind == "ivf":
                faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", int(self._faiss_params.get("nprobe", 1)))
        self._faiss_backend = index
        self.search_device = dev

    # -- queries --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def text_vectors(self) -> np.ndarray:
        """The (N, Dt) float32 text embeddings, row order (from the FAISS storage for approximate kinds)."""
        if self._text is None:
            self._text = faiss_vectors(self._faiss, self.kind)
        return self._text

    @property
    def xmax(self) -> float:
        if self._xmax is None:
            t = self.text_vectors()
            self._xmax = float(np.sqrt((t.astype(np.float64) ** 2).sum(1).max())) if len(t) else 1.0
        return self._xmax

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product for each query: ``(scores (B, k) float32, rows (B, k) int64)``.

        Exact search is deterministic: a query's result does not depend on the rest of its batch, and equal
        scores resolve to the lower row. Missing results (k > rows) are score -inf, row -1.
        """
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.text_dim:
            raise ValueError(f"queries must be (B, {self.text_dim}), got {q.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(q, dtype=np.float32)
        if not np.isfinite(q).all():
            raise ValueError("queries contain NaN or inf")
        if self._faiss_backend is not None:
            return faiss_search(self._faiss_backend, q, k)
        if self.kind == "exact":
            if self._gpu_text is not None:
                return exact_topk_torch(self._gpu_text, q, k, xmax=self.xmax)
            return exact_topk(self._text, q, k, xmax=self.xmax)
        if self._gpu_faiss is not None:
            return faiss_search(self._gpu_faiss, q, k)
        return faiss_search(self._faiss, q, k)

    def transform_images(self, raw: np.ndarray) -> np.ndarray:
        """Raw image-encoder outputs -> the table's space (centred if the index is, L2-normalised), float32."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim != 2 or raw.shape[1] != self.image_dim:
            raise ValueError(f"image embeddings must be (n, {self.image_dim}), got {raw.shape}")
        return transform_images(raw, self.image_mean)

    def source_embeddings(self, image_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Source-image embeddings by id: ``(emb (B, D) float32, found (B,) bool)``.

        Looked up in the sources file's embeddings first; an id that is only a corpus id falls back to its
        image-table row (the same image, same transform). Unknown ids get a zero row and found=False.
        """
        out = np.zeros((len(image_ids), self.image_dim), dtype=np.float32)
        found = np.zeros(len(image_ids), dtype=bool)
        for i, sid in enumerate(image_ids):
            j = self._source_row.get(sid)
            if j is not None:
                out[i] = self.sources_emb[j]
                found[i] = True
                continue
            r = self.row_of.get(sid)
            if r is not None:
                out[i] = self.image_table[r].astype(np.float32)
                found[i] = True
        return out, found


RUNTIME_KEYS = ("backend",)   # how an encoder runs, not its space: torch/onnx embed within ~1e-6 (docs/index.md)


def check_expected(meta: dict, expect: dict, root: Path | str = "index") -> None:
    """Raise IndexMismatch naming the first differing field of ``expect`` vs meta.json's encoders."""
    unknown = set(expect) - {"text", "image"}
    if unknown:
        raise ValueError(f"expect takes the keys 'text' and 'image' (describe() dicts), got {sorted(unknown)}")
    recorded = meta.get("encoders", {})
    problems = []
    for side in ("text", "image"):
        want = expect.get(side)
        if not want:
            continue
        have = recorded.get(side) or {}
        for key, value in want.items():
            if key in RUNTIME_KEYS:
                continue
            if _norm(have.get(key)) != _norm(value):
                problems.append((f"encoders.{side}.{key}", have.get(key), value))
    if problems:
        field, got, want = problems[0]
        others = "" if len(problems) == 1 else "; also " + ", ".join(p[0] for p in problems[1:])
        raise IndexMismatch(f"index {root} was built with {field}={got!r} but the caller expects {want!r}{others}. "
                            "Use the encoders the index was built with, or rebuild it (cim index).",
                            field, got, want)


def _norm(value: Any) -> Any:
    """JSON round-trip so tuples/lists and numpy scalars compare as meta.json stores them."""
    return json.loads(json.dumps(value, default=str))
