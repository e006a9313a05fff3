"""``caption(cfg, captioner, benchmark, out_path)``: one captioner over one benchmark -> ``captions.jsonl``.

``captioner`` is a row of the comparison (``sft``, ``cim``, ``cim-grc``, ...: the local backend's folder
``<pipeline.checkpoint_dir>/<name>``, or ``checkpoint=``), any registered captioner name (``hf``, ``vllm``,
``file``, ``levels``, ``local``, a released ``kkk5/CIM-*``; the rest of ``eval.captioner`` configures it),
or a :class:`cim.eval.captioners.Captioner`. The prompt is ``eval.prompt`` or the benchmark's; decoding is
``eval.captioner``'s (greedy): the named protocols set both (``--protocol official``: the release's prompt,
greedy, 1,024 new tokens). Each row records prompt, decoding and captioner; ``captions.meta.json`` beside
it records the model identity (checkpoint, step, weights hash), the protocol and the counts.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cim.errors import ConfigError
from cim.io import atomic_write_json, write_jsonl


def kind(cfg, captioner: Any, checkpoint: str | Path | None = None) -> str:
    """``object``, ``local`` (a pipeline row or a checkpoint) or ``registered``; ConfigError for another name."""
    from cim.eval.captioners import CAPTIONERS, Captioner
    from cim.pipeline.variants import variants

    if isinstance(captioner, Captioner):
        return "object"
    if captioner in variants(cfg) or checkpoint is not None:
        return "local"
    if captioner not in CAPTIONERS.names():
        raise ConfigError(f"captioner {captioner!r} is neither a pipeline row ({', '.join(variants(cfg))}) nor a "
                          f"registered captioner ({', '.join(CAPTIONERS.names())})")
    return "registered"


def build(cfg, captioner: Any, checkpoint: str | Path | None = None):
    """The :class:`~cim.eval.captioners.Captioner` ``captioner`` names (see the module doc)."""
    from cim.config import with_overrides
    from cim.eval.captioners import CAPTIONERS
    from cim.pipeline.variants import checkpoint_dir

    found = kind(cfg, captioner, checkpoint)
    if found == "object":
        return captioner
    c = cfg.eval.captioner
    if found == "local":
        from cim.eval.local_captioner import LocalCheckpointCaptioner

        path = checkpoint if checkpoint is not None else checkpoint_dir(cfg, captioner)
        return LocalCheckpointCaptioner(path, batch_size=c.batch_size, max_new_tokens=c.max_new_tokens)
    return CAPTIONERS.get(captioner)(with_overrides(cfg, {"eval.captioner.name": captioner}).eval.captioner)


def _portable(path: str | None) -> str | None:
    """A path under the working folder as a relative one (committed outputs hold no absolute paths)."""
    if not path:
        return path
    p = Path(path)
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix() if p.is_absolute() else p.as_posix()
    except ValueError:
        return p.as_posix()


def _rows(cfg, cap, bench, prompt: str, progress: bool) -> tuple[list[dict], dict]:
    from cim.eval.captioners import generate_captions

    if getattr(cap, "name", "") != "levels":
        return generate_captions(cap, bench.samples, prompt, batch_size=max(1, cfg.eval.captioner.batch_size),
                                 progress=progress)
    with tempfile.TemporaryDirectory() as tmp:        # graded captions: one row per level, pick eval.method
        rows = {m: caps for m, caps, _ in cap.methods(bench, prompt, Path(tmp))}
    if cfg.eval.method not in rows:
        raise ConfigError(f"captioner levels has one row per level: set eval.method to one of {', '.join(rows)}")
    caps = rows[cfg.eval.method]
    out = [{"id": s.id, "image": str(s.image) if s.image else None, "caption": caps.get(s.id, ""), "prompt": prompt,
            "captioner": f"levels:{cfg.eval.method}", "decoding": None,
            "error": None if s.id in caps else "no graded caption"} for s in bench.samples]
    return out, {"images": len(out), "captioned": sum(1 for r in out if r["caption"])}


def caption(cfg, captioner: Any, benchmark: str, out_path: str | Path, checkpoint: str | Path | None = None,
            progress: bool = True, track: bool = True) -> Path:
    """Caption every sample of ``benchmark`` with ``captioner``; writes ``out_path`` (jsonl) and
    ``captions.meta.json`` beside it, inside the MLflow run ``caption[<captioner>]``; returns ``out_path``."""
    import contextlib

    from cim.eval.evaluate import Evaluator
    from cim.protocols import label
    from cim.tracking import start_run

    name = captioner if isinstance(captioner, str) else captioner.name
    kind(cfg, captioner, checkpoint)          # an unknown name fails here, before any run or work
    out_path = Path(out_path)
    run = start_run(cfg, "caption", run_name=f"caption[{name}]", tags={"captioner": name, "benchmark": benchmark}) \
        if track else contextlib.nullcontext()
    with run:
        cap = build(cfg, captioner, checkpoint)
        bench = Evaluator(cfg).load(benchmark)
        prompt = cfg.eval.prompt or bench.spec.prompt
        rows, counts = _rows(cfg, cap, bench, prompt, progress)
        for row in rows:
            row["image"] = _portable(row.get("image"))
        write_jsonl(rows, out_path)
        words = [len((r["caption"] or "").split()) for r in rows]
        meta = {"captioner": name, "benchmark": benchmark, "prompt": prompt, "describe": cap.describe(),
                "protocol": label(cfg), "counts": counts,
                "caption_words": sum(words) / len(words) if words else 0.0}
        atomic_write_json(out_path.parent / "captions.meta.json", meta, indent=2, sort_keys=True)
        if track:
            import mlflow

            mlflow.log_metrics({f"captions/{k}": float(v) for k, v in counts.items()})
            mlflow.log_metric("captions/words_mean", meta["caption_words"])
            mlflow.log_artifact(str(out_path), artifact_path="captions")
            mlflow.log_artifact(str(out_path.parent / "captions.meta.json"), artifact_path="captions")
    return out_path


def captions_path(cfg, name: str) -> Path:
    """Where the comparison keeps ``name``'s captions: ``<pipeline.captions_dir>/<name>/captions.jsonl``."""
    return Path(cfg.pipeline.captions_dir) / name / "captions.jsonl"


__all__ = ["caption", "build", "captions_path"]
