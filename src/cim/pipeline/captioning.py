"""The captioners of the comparison: what a name means (:func:`kind`, :func:`build`) and their rows over a
benchmark (:func:`caption_rows`); the ``caption`` stage (:mod:`cim.stages.caption`) writes them.

``captioner`` is a run of the comparison (``sft``, ``cim-s0``, ``cim-grc-s1``, ...: the local backend's
folder ``<pipeline.checkpoint_dir>/<run>``, or ``checkpoint=``), any registered captioner name (``hf``, ``vllm``,
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


def kind(cfg, captioner: Any, checkpoint: str | Path | None = None) -> str:
    """``object``, ``local`` (a pipeline row or a checkpoint) or ``registered``; ConfigError for another name."""
    from cim.eval.captioners import CAPTIONERS, Captioner
    from cim.pipeline.variants import runs

    if isinstance(captioner, Captioner):
        return "object"
    known = [run for row in runs(cfg).values() for run in row]
    if captioner in known or checkpoint is not None:
        return "local"
    if captioner not in CAPTIONERS.names():
        raise ConfigError(f"captioner {captioner!r} is neither a pipeline run ({', '.join(known)}) nor a "
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
        from cim.train.local.captioner import LocalCheckpointCaptioner

        path = checkpoint if checkpoint is not None else checkpoint_dir(cfg, captioner)
        return LocalCheckpointCaptioner(path, batch_size=c.batch_size, max_new_tokens=c.max_new_tokens)
    return CAPTIONERS.build(captioner, with_overrides(cfg, {"eval.captioner.name": captioner}).eval.captioner)


def portable(path: str | None) -> str | None:
    """A path under the working folder as a relative one (committed outputs hold no absolute paths)."""
    if not path:
        return path
    p = Path(path)
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix() if p.is_absolute() else p.as_posix()
    except ValueError:
        return p.as_posix()


def caption_rows(cfg, cap, bench, prompt: str, progress: bool) -> tuple[list[dict], dict]:
    from cim.eval.captioners import generate_captions

    if getattr(cap, "name", "") != "levels":
        if hasattr(cap, "align"):             # captions from a file: its images must be the benchmark's
            cap.align(bench)
        return generate_captions(cap, bench.samples, prompt, batch_size=max(1, cfg.eval.captioner.batch_size),
                                 progress=progress)
    with tempfile.TemporaryDirectory() as tmp:        # graded captions: one row per level, pick eval.method
        rows = {m: caps for m, caps, _ in cap.methods(bench, prompt, Path(tmp))}
    if cfg.eval.method not in rows:
        raise ConfigError(f"captioner levels has one row per level: set eval.method to one of {', '.join(rows)}")
    caps = rows[cfg.eval.method]
    out = [{"image_id": s.id, "image": str(s.image) if s.image else None, "caption": caps.get(s.id, ""), "prompt": prompt,
            "captioner": f"levels:{cfg.eval.method}", "decoding": None,
            "error": None if s.id in caps else "no graded caption"} for s in bench.samples]
    return out, {"images": len(out), "captioned": sum(1 for r in out if r["caption"])}
