"""The ``compare`` stage: the paper's Table 2 over the pipeline's captioners, with seeds and intervals.

Every captioner row has one captions file per seed (``{row: [captions.jsonl, ...]}``; the SFT start has
one). Each file is scored with the benchmark's method metrics through the metric registry
(:meth:`cim.eval.evaluate.Evaluator.evaluate`: CAPTURE, Objects/Attributes P/R/F1, Relations QA, BLEU-4,
METEOR, the CIM reward, ground-truth recall, caption length, and any metric a plugin registers), all on the
same images; the table (:func:`cim.pipeline.table.comparison`) holds each row's mean over seeds, a 95%
interval and its delta against the baseline row with a paired bootstrap interval. Files:
``captioners.json`` / ``.md`` / ``.png``, ``metrics.json`` / ``details.json`` for DVC (:func:`cim.eval.results.
write_comparison`). Publishing it to MLflow is the next step of the run plan (:mod:`cim.pipeline.plan`):
the ``publish`` stage, which every runner runs after this one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from cim.errors import ConfigError, InputError

__all__ = ["compare", "as_seed_files"]


def as_seed_files(captions: Mapping[str, str | Path | Sequence[str | Path]]) -> dict[str, list[Path]]:
    """``{row: [file per seed]}`` from ``{row: file}`` or ``{row: [files]}``."""
    out = {}
    for name, files in captions.items():
        files = [files] if isinstance(files, (str, Path)) else list(files)
        if not files:
            raise ConfigError(f"captioner {name!r} has no captions file")
        out[str(name)] = [Path(f) for f in files]
    return out


def compare(cfg, captions: Mapping[str, str | Path | Sequence[str | Path]], benchmark: str, baseline: str,
            out_dir: str | Path, *, log=print, n_boot: int | None = None) -> dict:
    """Score every row's seeds and write the comparison to ``out_dir``; returns the table. Images a file does not caption are an error unless ``eval.allow_partial``: then every
    row is scored on the images all files caption."""
    from cim.config import check_names
    from cim.determinism import deterministic
    from cim.captions import match_images, read_captions
    from cim.eval.evaluate import EVAL_NAMES, Evaluator
    from cim.eval.metrics import metric
    from cim.eval.results import write_comparison
    from cim.pipeline.table import comparison

    check_names(cfg, *EVAL_NAMES)
    files = as_seed_files(captions)
    if not files:
        raise ConfigError("compare needs at least one captioner's captions")
    if baseline not in files:
        raise ConfigError(f"baseline {baseline!r} is not one of the captioners: {', '.join(files)}")
    pipeline = _from_pipeline(cfg, files)
    for name, paths in files.items():
        for path in paths:
            if not path.is_file():
                advice = (f"caption it first (`dvc repro caption` or `cim caption --captioner {path.parent.name}`)"
                          if pipeline else "check the path (`cim caption --out FILE` writes one)")
                raise InputError(f"captions of {name!r} not found at {path}: {advice}")
    ev = Evaluator(cfg, log=log)
    bench = ev.load(benchmark)
    names = [m for m in (list(cfg.eval.metrics) or list(bench.spec.metrics)) if metric(m).scope == "method"]
    images = {s.id: (str(s.image) if s.image else None) for s in bench.samples}
    read = {name: [_on_benchmark(p, read_captions(p), images, bench.name, match_images) for p in paths]
            for name, paths in files.items()}
    ids = [s.id for s in bench.samples]
    if cfg.eval.allow_partial:           # the images every file captions: every row counts the same ones
        ids = [i for i in ids if all(i in caps for seeds in read.values() for caps, _ in seeds)]
        if not ids:
            raise InputError("no image is captioned by every captions file: nothing to compare")
    results = {}
    with deterministic(int(cfg.seed)):
        for name, seeds in read.items():
            results[name] = []
            for n, (caps, _) in enumerate(seeds):
                res = ev.evaluate(bench, name if len(seeds) == 1 else f"{name}#{n}", caps, names, ids)
                for m, error in res.errors.items():
                    log(f"compare {benchmark}/{res.method}: {m} failed: {error}")
                results[name].append(res)
    table = comparison(results, benchmark, baseline, [metric(m) for m in names], ids,
                       n_boot=cfg.pipeline.n_boot if n_boot is None else n_boot, seed=int(cfg.seed))
    for row in table["rows"]:
        row["coverage"] = {"benchmark": len(bench.samples), "scored": len(ids),
                           "failed": sum(len(failed) for _, failed in read[row["captioner"]]),
                           "skipped": _skipped(results[row["captioner"]], len(ids))}
    table["files"] = {name: [p.as_posix() for p in paths] for name, paths in files.items()}
    if pipeline:              # what the table's footnote may say of the seeds (true of the pipeline's runs only)
        table["seeds"] = "GRPO runs from the one SFT start"
    write_comparison(table, Path(out_dir))
    return table


def _from_pipeline(cfg, files: Mapping[str, Sequence[Path]]) -> bool:
    """Whether ``files`` are the pipeline's own runs' captions, not files a user named: its rows, each seed's
    file in its run's folder (``<captions_dir>/<run>/captions.jsonl``, wherever a flow run put that folder)."""
    from cim.pipeline.variants import runs

    try:
        mine = runs(cfg)
    except Exception:  # noqa: BLE001  (a config without a pipeline: the files are the user's)
        return False
    return {row: [Path(p).parent.name for p in paths] for row, paths in files.items()} == mine


def _on_benchmark(path, read, images, bench: str, match_images):
    """A file's ``(captions, failed)`` keyed by benchmark image id (a file whose images are none of the
    benchmark's is an error naming a few of each)."""
    captions, failed = read
    keys = match_images(path, [*captions, *failed], images, f"benchmark {bench}")
    return ({keys[k]: v for k, v in captions.items() if k in keys},
            {keys[k]: v for k, v in failed.items() if k in keys})


def _skipped(seeds, n: int) -> dict[str, list[int]]:
    """Per metric and seed, the images it left out: its own rule's (the fine-grained attribute rule) or failed
    ones (the CIM reward of a caption that is no text)."""
    out: dict[str, list[int]] = {}
    for res in seeds:
        for name, counts in res.counts.items():
            if isinstance(counts, dict) and name != "coverage":
                left = counts.get("skipped_no_attributes", counts.get("failed", 0))
                out.setdefault(name, []).append(int(left) if isinstance(left, (int, float)) else 0)
    return {k: v for k, v in out.items() if any(v)}
