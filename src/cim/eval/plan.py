"""What ``cim evaluate`` will do, resolved without loading a model or a benchmark (``cim evaluate --dry-run``):
the protocol and its deviations, the captioner (a released checkpoint: its base, engine and where its
weights are, or how to get them), prompt and decoding, parser, judge, and per benchmark its files, CAPTURE
encoder, metrics and the published rows the table will show beside the results."""
from __future__ import annotations

from pathlib import Path

from cim.eval.benchmarks import load_spec, resolve_path

__all__ = ["evaluation_plan"]


def _benchmark(cfg, name: str, root: Path, paper_rows: list[str]) -> dict:
    e = cfg.eval
    spec = load_spec(name, root, data_dir=e.data_dirs.get(name), images=e.images.get(name))
    data_dir = resolve_path(root, spec.data_dir)
    return {"name": spec.name, "format": spec.format, "source": spec.source, "data_dir": str(data_dir),
            "files": {role: (data_dir / f).is_file() for role, f in spec.files.items()},
            "images": str(resolve_path(root, spec.images)) if spec.images else None,
            "prompt": e.prompt or spec.prompt, "capture_encoder": e.text_encoder or spec.capture_encoder,   # a model name or encoder fields
            "metrics": list(e.metrics) or list(spec.metrics),
            "paper_rows": {k: spec.paper[k] for k in paper_rows if k in (spec.paper or {})}}


def evaluation_plan(cfg, root: str | Path = ".") -> dict:
    from cim.eval import released
    from cim.protocols import describe

    e, c = cfg.eval, cfg.eval.captioner
    cap = released.plan(c) or {"name": c.name, "model": c.model}
    cap.setdefault("name", c.name)
    rows = cap.get("paper_rows", [])
    return {"protocol": describe(cfg),
            "captioner": cap,
            "decoding": {"greedy": True, "max_new_tokens": c.max_new_tokens, "engine": c.engine},
            "parser": {"name": e.parser.name, "model": e.parser.model or "(default)"},
            "judge": {"name": e.judge.name, "model": e.judge.model or "(default)", "backend": e.judge.backend},
            "benchmarks": [_benchmark(cfg, name, Path(root), rows) for name in e.benchmarks],
            "out_dir": str(Path(root) / e.out_dir)}
