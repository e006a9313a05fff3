"""Evaluation as a library: benchmarks x captions -> metrics -> results files and tables.

The ``evaluate`` stage (:func:`cim.stages.evaluate.evaluate`) runs ``Evaluator(cfg).run()``, which does,
for every benchmark in ``cfg.eval.benchmarks``:

1. load it (:mod:`cim.eval.benchmarks`; its format supplies what differs between releases);
2. get captions per *method* (table row) from the configured captioner (:mod:`cim.eval.captioners`): the
   world's graded captions, one row per level (``levels``), a captions file, or a VLM run now (``hf`` /
   ``vllm``; written to ``<out_dir>/<benchmark>/<method>/captions.jsonl`` with prompt and decoding);
3. compute the benchmark's metrics (or ``eval.metrics``), each a registered :mod:`cim.eval.metrics` entry,
   each isolated: a metric that cannot run (no Java, no index, weights absent) is an ``errors`` entry in
   the result, not a crash;
4. write ``results.json`` and ``items.jsonl`` (per caption) per method, the markdown table of every method
   found under ``<out_dir>/<benchmark>/`` with deltas against ``eval.baseline``, then run the benchmark
   experiments (verification: ``verification.json`` + ``.png``; parser recall: ``parser_recall.json``).

The stage then writes ``<out_dir>/metrics.json`` and logs one MLflow run. Every result records which
parser, text encoder and judge produced it, each metric's protocol, and the named protocol (:mod:`cim.protocols`)
with its deviations; a table shows the benchmark's published numbers (``paper:``) beside the captioner
they belong to (a released checkpoint) as reference rows.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cim.eval.benchmarks import Benchmark, load_benchmark
from cim.eval.metrics import Metric, metric
from cim.eval.released import paper_key
from cim.eval.results import TABLE_FILE, markdown_table, method_dir, reference_rows
from cim.errors import InputError
from cim.io import atomic_write_text, json_safe, write_json, write_jsonl
from cim.protocols import describe as describe_protocol, label as protocol_label

__all__ = ["MethodResult", "Evaluator", "coverage_of", "EVAL_NAMES"]

# the names of pluggable parts an evaluation uses, checked before any work (the evaluate and compare stages)
EVAL_NAMES = ("eval.parser.name", "eval.judge.name", "eval.captioner.name", "eval.metrics")


def coverage_of(ids: list[str], captions: dict[str, str], refs: dict) -> dict[str, int]:
    """How much of the benchmark ``ids`` a captions mapping covers."""
    captioned = sum(1 for i in ids if i in captions)
    return {"samples": len(ids), "captioned": captioned, "without_caption": len(ids) - captioned,
            "empty": sum(1 for i in ids if i in captions and not (captions[i] or "").strip()),
            "ids_not_in_benchmark": sum(1 for i in captions if i not in refs)}


@dataclass
class MethodResult:
    benchmark: str
    method: str
    metrics: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict] = field(default_factory=dict)
    protocol: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    captions: dict[str, Any] = field(default_factory=dict)     # where the captions came from + their counts
    items: dict[str, dict] = field(default_factory=dict)       # per caption id

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("items")
        return d



class Evaluator:
    """Builds each heavy component once, on first use (parser, text encoder, judge, scorer), and runs the
    stage; metrics read the components from it (:mod:`cim.eval.metrics`)."""

    def __init__(self, cfg, root: str | Path = ".", log=print):
        self.cfg, self.ecfg, self.root, self.log = cfg, cfg.eval, Path(root), log
        self._parts: dict[str, Any] = {}
        self.current: Benchmark | None = None      # the benchmark being evaluated

    # -- components ---------------------------------------------------------------------------------
    def _part(self, key: str, build):
        if key not in self._parts:
            self._parts[key] = build()
        return self._parts[key]

    def parser(self):
        from cim.eval.parsers import build_parser

        p = self.ecfg.parser
        return self._part("parser", lambda: build_parser(p.name, p.model or None, p.device))

    def capture_encoder(self, bench: Benchmark | None = None) -> dict:
        """The text encoder of CAPTURE's soft match (and the attribute metrics) for ``bench`` (default: the one
        being evaluated), as ``encoders.text``-style fields: ``eval.text_encoder`` (an SBERT model) when set,
        else the benchmark's declared ``capture_encoder``. Never the retrieval encoder (``encoders.text``):
        changing the reward's encoder must not move these numbers."""
        spec = self.ecfg.text_encoder or (bench or self.current).spec.capture_encoder
        return dict(spec) if isinstance(spec, dict) else {"name": "sentence-transformers", "model": spec}

    def capture_encoder_fields(self, bench: Benchmark | None = None) -> dict:
        """Every field CAPTURE's encoder is built with: :meth:`capture_encoder` over the text-encoder defaults
        (batch size and device too are never ``encoders.text``'s: padding moves embeddings in the last bits)."""
        from cim.config import TextEncoderConfig, to_dict
        from omegaconf import OmegaConf

        return to_dict(OmegaConf.merge(OmegaConf.structured(TextEncoderConfig), self.capture_encoder(bench)))

    def text_encoder(self, bench: Benchmark | None = None):
        from cim.config import TextEncoderConfig
        from cim.encoders import build_text_encoder

        fields = self.capture_encoder_fields(bench)
        key = "text_encoder:" + json.dumps(fields, sort_keys=True)
        return self._part(key, lambda: build_text_encoder(TextEncoderConfig(**fields)))

    def capture(self, bench: Benchmark | None = None):
        from cim.eval.capture import Capture

        key = "capture:" + json.dumps(self.capture_encoder(bench), sort_keys=True)
        return self._part(key, lambda: Capture(self.parser(), self.text_encoder(bench), substring=self.ecfg.substring))

    def judge(self):
        from cim.eval.judges import build_judge

        j = self.ecfg.judge
        return self._part("judge", lambda: build_judge(j.name, j.model or None, parser=self.parser(),
                                                       backend=j.backend, device=j.device))

    def scorer(self):
        from cim.reward.scorer import Scorer

        # the reward's own encoder (encoders.text); one already loaded for CAPTURE is shared when it is the same
        from cim.config import to_dict

        shared = self._parts.get("text_encoder:" + json.dumps(to_dict(self.cfg.encoders.text), sort_keys=True))
        return self._part("scorer", lambda: Scorer.from_config(self.cfg, text_encoder=shared))

    # -- benchmarks and captions --------------------------------------------------------------------
    def bench_dir(self, bench: Benchmark) -> Path:
        return self.root / self.ecfg.out_dir / bench.name

    def load(self, name: str) -> Benchmark:
        bench = load_benchmark(name, self.root, data_dir=self.ecfg.data_dirs.get(name),
                               images=self.ecfg.images.get(name))
        if self.ecfg.max_samples:
            bench.limit(self.ecfg.max_samples)
        return bench

    def captioner(self):
        """The configured captioner, built once (a released checkpoint resolves its weights here, so a missing
        one fails before any benchmark is loaded)."""
        from cim.eval.captioners import CAPTIONERS

        c = self.ecfg.captioner
        return self._part("captioner", lambda: CAPTIONERS.build(c.name, c))

    def baseline(self) -> str:
        """``eval.baseline``, else the captioner's own (a released checkpoint's base row, with ``with_base``)."""
        return self.ecfg.baseline or getattr(self.captioner(), "baseline", "")

    def methods(self, bench: Benchmark) -> list[tuple[str, dict[str, str], dict]]:
        """(method name, {id: caption}, provenance) for every table row this run produces."""
        c = self.ecfg.captioner
        return self.captioner().methods(bench, self.ecfg.prompt or bench.spec.prompt, self.bench_dir(bench),
                                        method=self.ecfg.method, batch_size=c.batch_size)

    # -- metrics ------------------------------------------------------------------------------------
    def evaluate(self, bench: Benchmark, method: str, captions: dict[str, str], metrics: list[str],
                 ids: list[str] | None = None) -> MethodResult:
        """One table row: every method-scope metric of ``metrics`` on ``captions``, all on the same samples:
        the benchmark's, or ``ids``. Samples without a caption are an :class:`~cim.errors.InputError` unless
        ``eval.allow_partial``: then every metric is computed on the captioned samples alone (an empty caption
        is a caption, scored as such). ``counts["coverage"]`` says how many, ``counts[metric]`` what each
        metric's own rule skipped."""
        self.current = bench
        res = MethodResult(bench.name, method)
        refs = bench.references()
        ids = [s.id for s in bench.samples] if ids is None else list(ids)
        res.counts["coverage"] = coverage = coverage_of(ids, captions, refs)
        if coverage["without_caption"] and not self.ecfg.allow_partial:
            raise InputError(f"{bench.name}/{method}: captions cover {coverage['captioned']} of {coverage['samples']} "
                             f"images ({coverage['without_caption']} without a caption, failed or missing); every "
                             "metric of a row must count the same images: caption them all, or set "
                             "eval.allow_partial=true (--subset) to score the captioned images alone")
        ids = [i for i in ids if i in captions]
        refs = {i: refs[i] for i in ids}
        res.items = {i: {"caption": captions[i]} for i in ids}
        mine = {i: captions[i] for i in ids}
        for m in (metric(name) for name in metrics):
            if m.scope == "method":
                self._isolated(f"{bench.name}/{method}", m, res.errors, m.compute, self, bench, refs, mine, res)
        res.protocol["protocol"], res.labels["protocol"] = describe_protocol(self.cfg), protocol_label(self.cfg)
        return res

    def _isolated(self, where: str, m: Metric, errors: dict, fn, *args):
        """Run one metric; a failure is an ``errors`` entry (one metric failing must not stop the others)."""
        t0 = time.perf_counter()
        try:
            out = fn(*args)
        except Exception as exc:  # noqa: BLE001
            errors[m.name] = f"{type(exc).__name__}: {exc}"
            self.log(f"  {where}: {m.name} failed: {errors[m.name]}")
            return None
        self.log(f"  {where}: {m.name} done in {time.perf_counter() - t0:.1f}s")
        return out

    # -- the whole run --------------------------------------------------------------------------------
    def run(self) -> dict:
        """Every benchmark of ``eval.benchmarks``: results files and table; returns the summary
        ``{"benchmarks": {name: info}, "results": [results.json dicts]}``."""
        summary: dict[str, Any] = {"benchmarks": {}, "results": []}
        self.captioner()
        for name in self.ecfg.benchmarks:
            t0 = time.perf_counter()
            bench = self.load(name)
            out_dir = self.bench_dir(bench)
            metrics = list(self.ecfg.metrics) or list(bench.spec.metrics)
            self.log(f"{bench.name}: {bench.counts['samples']} samples, metrics {', '.join(metrics)}")
            info: dict[str, Any] = {"report": bench.report(), "metrics": metrics, "errors": {}}
            results = []
            for method, caps, provenance in self.methods(bench):
                r = self.evaluate(bench, method, caps, metrics)
                r.captions = provenance
                r.counts["benchmark"] = dict(bench.counts)
                mdir = method_dir(out_dir, method)
                write_json(mdir / "results.json", r.to_dict())
                write_jsonl((json_safe({"id": k, **v}) for k, v in r.items.items()), mdir / "items.jsonl")
                results.append(r)
            for m in (metric(n) for n in metrics):
                if m.scope != "benchmark":
                    continue
                missing = [x for x in m.requires if x not in metrics]
                if missing:
                    info["errors"][m.name] = f"{m.name} needs the {', '.join(missing)} metric"
                    continue
                info[m.name] = self._isolated(bench.name, m, info["errors"], m.compute, self, bench, results, out_dir)
            all_results = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/results.json"))]
            keys = sorted({k for r in all_results for k in paper_key((r.get("captions") or {}).get("describe") or {})})
            atomic_write_text(out_dir / TABLE_FILE, markdown_table(all_results, self.baseline(),
                                                                   references=reference_rows(bench.spec, keys)))
            info["table"] = str(out_dir / TABLE_FILE)
            write_json(out_dir / "benchmark.json", info)    # a DVC output: no wall time in it (reproducible)
            info["seconds"] = round(time.perf_counter() - t0, 1)
            summary["benchmarks"][bench.name] = info
            summary["results"].extend(all_results)
        return summary
