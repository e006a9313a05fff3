"""`cim index --engine ray`: embed a corpus's unfinished shards on a Ray cluster (local or ``--address``).

Ray Data pipeline, one row per shard: ``map`` runs CPU tasks that decode and preprocess the shard's images
(the image encoder's own transform, rebuilt from its ``preprocess_spec`` without a model) in the local
engine's chunks of ``encoders.image.batch_size``; ``map_batches`` with ``ActorPoolStrategy(size=n)`` runs
the embedding actors (``index.ray_gpus`` GPUs each, CPU actors without GPUs), each holding both encoders and
embedding the same chunks and the same text list as the local engine, so the arrays are the same bytes. The
driver writes each shard's files and marker as it arrives (cim.index.shards), so a killed run resumes with
either engine and the two engines' builds are interchangeable. Image paths must be readable from every node
(a shared file system on a multi-node cluster).
"""
from __future__ import annotations

import json
import logging
import pickle
from typing import Callable, Sequence

import numpy as np

from cim.errors import ConfigError

__all__ = ["RayRun"]


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - ray ships with the verl extra
        raise ConfigError("index.engine=ray needs Ray: pip install 'ray[data]' (or use index.engine=local)") from None
    return ray


def decode_shard(item: dict, spec: dict, batch: int, policy: str) -> dict:
    """A Ray task: one shard's images decoded and preprocessed in chunks of ``batch``; unreadable ones are
    recorded (policy skip) or reported back as the error the local engine would raise (policy error)."""
    from cim.encoders import ImageReadError
    from cim.encoders.image import preprocess_from_spec, preprocess_images
    from cim.index.shards import bad_image_error, readable_rows

    rows = json.loads(item["rows"])
    prep = preprocess_from_spec(spec)
    chunks, skipped, error = [], [], None
    for c0 in range(0, len(rows), batch):
        chunk = rows[c0:c0 + batch]
        try:
            chunks.append(preprocess_images(prep, [r["image"] for r in chunk]))
            continue
        except ImageReadError as exc:
            if policy == "error":
                err = bad_image_error(exc, chunk)
                error = (err.path, err.reason)
                break
        good, bad = readable_rows(chunk)
        skipped.extend(bad)
        if good:
            chunks.append(preprocess_images(prep, [r["image"] for r in good]))
    bad_ids = {s["id"] for s in skipped}
    texts = [r["text"] for r in rows if r["id"] not in bad_ids]
    payload = {"chunks": chunks, "texts": texts, "skipped": skipped, "error": error}
    return {"shard": item["shard"], "payload": pickle.dumps(payload, protocol=5)}


class ShardEmbedder:
    """A Ray Data actor: both encoders, built once; a batch of decoded shards -> their embeddings."""

    def __init__(self, encoders_cfg, expected: dict, seed: int, threads: int | None):
        from cim.determinism import deterministic
        from cim.encoders import build_image_encoder, build_text_encoder

        self._det = deterministic(seed, threads)
        self._det.__enter__()
        self.text = build_text_encoder(encoders_cfg.text)
        self.image = build_image_encoder(encoders_cfg.image)
        got = {"text": self.text.describe(), "image": self.image.describe()}
        if got != expected:
            raise ConfigError(f"a Ray embedding actor built other encoders than expected: {got} vs {expected}")

    def __call__(self, batch: dict) -> dict:
        out = []
        for blob in batch["payload"]:
            job = pickle.loads(blob)
            if job["error"] is not None:
                out.append(pickle.dumps({"error": job["error"]}, protocol=5))
                continue
            img = [self.image.embed_pixels(c) for c in job["chunks"]]
            img = np.concatenate(img, axis=0) if img else np.zeros((0, self.image.dim), np.float32)
            text = self.text.encode(job["texts"]).astype(np.float32, copy=False)
            out.append(pickle.dumps({"text": text, "image": img.astype(np.float32, copy=False),
                                     "skipped": job["skipped"], "error": None}, protocol=5))
        return {"shard": np.asarray(batch["shard"]), "result": np.array(out, dtype=object)}


class _EncoderActor:
    """One actor with the image encoder: what the encoders describe() on the cluster's workers, and the
    source images' embeddings (few, after the corpus)."""

    def __init__(self, encoders_cfg, seed: int, threads: int | None, text: bool):
        from cim.determinism import deterministic
        from cim.encoders import build_image_encoder, build_text_encoder

        self._det = deterministic(seed, threads)
        self._det.__enter__()
        self.image = build_image_encoder(encoders_cfg.image)
        self.text_described = build_text_encoder(encoders_cfg.text).describe() if text else None

    def info(self) -> dict:
        return {"described": {"text": self.text_described, "image": self.image.describe()},
                "spec": getattr(self.image, "preprocess_spec", None), "dim": self.image.dim,
                "batch_size": int(getattr(self.image, "batch_size", 32) or 32)}

    def encode(self, images: list) -> np.ndarray:
        return self.image.encode(images)


class _RemoteImageEncoder:
    """The image-encoder interface cim.index.build needs for source images, served by an _EncoderActor."""

    def __init__(self, run: "RayRun"):
        self._run = run
        self.dim, self.batch_size = run.info["dim"], run.info["batch_size"]

    def encode(self, images: Sequence) -> np.ndarray:
        ray = _ray()
        if self._run.sources_actor is None:
            self._run.sources_actor = self._run.encoder_actor(text=False)
        return ray.get(self._run.sources_actor.encode.remote([str(x) for x in images]))

    def describe(self) -> dict:
        return self._run.described["image"]


class RayRun:
    """A Ray session for one build: started here (``index.ray_address``: "" = a local cluster) or joined
    when Ray is already initialised (a test's, a notebook's); only a session started here is shut down."""

    def __init__(self, cfg):
        ray = _ray()
        self.cfg = cfg
        icfg = cfg.index
        self._own = not ray.is_initialized()
        if self._own:
            address = str(icfg.ray_address or "") or None
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", configure_logging=False)
        gpus_total = float(ray.cluster_resources().get("GPU", 0))
        gpus = float(icfg.ray_gpus)
        self.gpus = (1.0 if gpus_total > 0 else 0.0) if gpus < 0 else gpus
        if self.gpus > gpus_total:
            raise ConfigError(f"index.ray_gpus={self.gpus:g} but the Ray cluster has {gpus_total:g} GPUs")
        actors = int(icfg.ray_actors or 0)
        self.actors = actors if actors > 0 else (max(1, int(gpus_total // self.gpus)) if self.gpus else 1)
        # CPU kernels' last bits depend on torch's thread count: CPU actors use the driver's, so their arrays are
        # the bytes a local build on this machine writes (on GPUs the thread count does not enter)
        import torch

        self.threads = None if self.gpus else torch.get_num_threads()
        self.sources_actor = None
        probe = self.encoder_actor(text=True)
        self.info = ray.get(probe.info.remote())
        ray.kill(probe)                       # free its GPU for the pool
        if self.info["spec"] is None:
            raise ConfigError(f"encoders.image.name={cfg.encoders.image.name!r} has no preprocess_spec, so "
                              "index.engine=ray cannot decode its images apart from the model; use index.engine=local")
        self.described = self.info["described"]

    def encoder_actor(self, text: bool):
        ray = _ray()
        return ray.remote(num_gpus=self.gpus, num_cpus=1)(_EncoderActor).remote(
            self.cfg.encoders, int(self.cfg.seed), self.threads, text)

    @property
    def image_encoder(self) -> _RemoteImageEncoder:
        """The image encoder for the source images, served by an actor."""
        return _RemoteImageEncoder(self)

    def embed(self, jobs: list[tuple[tuple, list[dict]]], policy: str,
              write: Callable[[tuple, np.ndarray, np.ndarray, list[dict]], None], tick: Callable[[int], None]) -> None:
        """Embed ``jobs`` ((i, start, end, inputs), rows) and call ``write(job, text, image, skipped)`` on
        the driver as each shard arrives (in completion order), then ``tick(rows)``."""
        if not jobs:
            return
        ray = _ray()
        from cim.encoders import ImageReadError

        items = [{"shard": job[0], "rows": json.dumps([{k: r[k] for k in ("id", "image", "text")} for r in rows],
                                                      ensure_ascii=False)} for job, rows in jobs]
        by_shard = {job[0]: job for job, _ in jobs}
        ray.data.DataContext.get_current().enable_progress_bars = False   # the build's own bar counts rows
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        # each decoding task reserves the memory of its shard's pixels (twice: decoded and serialised); that
        # also keeps Ray Data from fusing decoding into the actors (fused, decoding would not overlap embedding)
        ds = ds.map(decode_shard, num_cpus=1, memory=self._pixel_bytes(max(len(r) for _, r in jobs)),
                    fn_kwargs={"spec": self.info["spec"], "policy": policy, "batch": self.info["batch_size"]})
        ds = ds.map_batches(ShardEmbedder, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=self.actors), num_gpus=self.gpus, num_cpus=1,
                            fn_constructor_kwargs={"encoders_cfg": self.cfg.encoders, "expected": self.described,
                                                   "seed": int(self.cfg.seed), "threads": self.threads})
        for row in ds.iter_rows():
            result = pickle.loads(row["result"])
            if result["error"] is not None:
                raise ImageReadError(*result["error"])     # as the local engine words it
            job = by_shard[int(row["shard"])]
            write(job, result["text"], result["image"], result["skipped"])
            tick(job[2] - job[1])

    def _pixel_bytes(self, rows: int) -> int:
        size = self.info["spec"].get("size", 224)
        side = size if isinstance(size, int) else max(size)
        return int(2 * rows * 3 * side * side * 4 + (512 << 20))   # + a worker with torch loaded

    def close(self) -> None:
        ray = _ray()
        if self.sources_actor is not None:
            ray.kill(self.sources_actor)
            self.sources_actor = None
        if self._own:
            ray.shutdown()
