"""The ``caption`` stage: one captioner over one benchmark -> ``captions.jsonl`` and ``captions.meta.json``
(prompt, decoding, model identity, protocol, counts). What a captioner name means: :mod:`cim.pipeline.captioning`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["caption"]


def caption(cfg, captioner: Any, benchmark: str, out_path: str | Path, checkpoint: str | Path | None = None,
            progress: bool = True, track: bool = True) -> Path:
    """Caption every sample of ``benchmark`` with ``captioner``; writes ``out_path`` (jsonl) and
    ``captions.meta.json`` beside it, inside the MLflow run ``caption[<captioner>]``; returns ``out_path``."""
    import contextlib

    from cim.determinism import deterministic
    from cim.eval.evaluate import Evaluator
    from cim.io import atomic_write_json, write_jsonl
    from cim.pipeline.captioning import build, caption_rows, kind, portable
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
        with deterministic(int(cfg.seed)):
            rows, counts = caption_rows(cfg, cap, bench, prompt, progress)
        for row in rows:
            row["image"] = portable(row.get("image"))
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
