"""Evaluation metrics, registered by name: each owns its name, its table columns and its computation.

Two scopes:

- ``method`` (a table row): ``compute(ev, bench, refs, captions, result)`` fills ``result.metrics`` (and
  ``counts``, ``protocol``, ``labels``, per-caption ``items``) for one captioning method. ``refs`` is
  ``{id: [reference, ...]}`` over the benchmark's samples, ``captions`` ``{id: caption}`` restricted to them;
  ``ev`` is the :class:`~cim.eval.evaluate.Evaluator`, which builds the heavy parts once (``ev.parser()``,
  ``ev.capture(bench)``, ``ev.judge()``, ``ev.scorer()``, ``ev.text_encoder(bench)``: CAPTURE's SBERT, the
  benchmark's ``capture_encoder``; ``ev.cfg`` is the config).
- ``benchmark`` (an experiment over every method's results): ``compute(ev, bench, results, out_dir)``
  returns a JSON-able dict (or None) stored under the metric's name in ``benchmark.json``; its
  ``headline(result)`` gives the numbers ``metrics.json`` and MLflow keep.

The metrics ``eval.metrics`` and a benchmark YAML's ``metrics:`` may name are exactly the registered ones
(a misspelt name is a ConfigError at load). The results table's columns are the method metrics' columns,
in ``order``. Adding one: docs/extending.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from cim.eval.results import finite, write_json
from cim import plugins
from cim.registry import Registry

__all__ = ["Column", "Metric", "METRICS", "metric", "table_columns"]


class Column(NamedTuple):
    key: str          # the key in result.metrics
    header: str       # the table's column header
    percent: bool     # shown x100 (fractions) rather than raw


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable
    columns: tuple[Column, ...] = ()
    scope: str = "method"                       # method | benchmark
    order: int = 100                            # position of its columns in the table
    requires: tuple[str, ...] = ()              # metrics that must run too (benchmark scope: before it)
    headline: Optional[Callable[[dict], dict]] = None   # benchmark scope: numbers for metrics.json / MLflow
    tracking: str = ""                          # MLflow name prefix (default: the metric's name)


METRICS: Registry[Metric] = plugins.METRICS


def metric(name: str, columns: Sequence[tuple[str, str, bool]] = (), *, scope: str = "method", order: int = 100,
           requires: Sequence[str] = (), headline: Optional[Callable[[dict], dict]] = None, tracking: str = ""):
    """Decorator: register ``fn`` as the metric ``name`` (see the module docstring for its signature)."""
    if scope not in ("method", "benchmark"):
        raise ValueError(f"metric scope must be method or benchmark, got {scope!r}")

    def wrap(fn: Callable) -> Callable:
        METRICS.register(name, Metric(name, fn, tuple(Column(*c) for c in columns), scope, order,
                                      tuple(requires), headline, tracking or name))
        return fn
    return wrap


def table_columns() -> list[Column]:
    """Every registered method metric's columns, in ``order`` (the results table)."""
    ms = sorted((m for _, m in METRICS.items() if m.scope == "method"), key=lambda m: (m.order, m.name))
    return [c for m in ms for c in m.columns]


# --------------------------------------------------------------------------------------- method metrics
@metric("capture", [("capture", "CAPTURE", True)], order=10)
def capture(ev, bench, refs, captions, res) -> None:
    out = ev.capture(bench).compute_score({k: v for k, v in refs.items() if v}, captions)
    res.metrics["capture"] = out.score
    res.metrics.update({f"capture_{k}": v for k, v in out.components.items()})
    res.counts["capture"], res.protocol["capture"] = out.counts, out.protocol
    res.labels["parser"] = out.protocol["parser"]
    res.labels["text encoder (CAPTURE soft match)"] = str(out.protocol["text_encoder"])
    for k, row in out.per_sample.items():
        res.items[k]["capture"] = row["capture"]


@metric("fine_grained", [("object_precision", "Obj P", True), ("object_recall", "Obj R", True),
                         ("object_f1", "Obj F1", True), ("attribute_precision", "Attr P", True),
                         ("attribute_recall", "Attr R", True), ("attribute_f1", "Attr F1", True)], order=20)
def fine_grained(ev, bench, refs, captions, res) -> None:
    from cim.eval.fine_grained import fine_grained_scores

    objects, attributes = bench.reference_lists()
    if not objects or not attributes:
        raise ValueError(f"{bench.name} has no object/attribute reference lists")
    out = fine_grained_scores(ev.capture(bench), refs, captions, objects, attributes)
    res.metrics.update(out.components)
    res.counts["fine_grained"], res.protocol["fine_grained"] = out.counts, out.protocol
    if bench.format.reference_note:
        res.protocol["fine_grained"]["reference_lists"] = bench.format.reference_note


@metric("relations_qa", [("relations_qa", "Rel QA", True)], order=30)
def relations_qa(ev, bench, refs, captions, res) -> None:
    from cim.eval.judges import relations_qa as score

    out = score(ev.judge(), {k: q for k, q in bench.questions.items() if k in refs}, captions)
    res.metrics["relations_qa"] = out.accuracy
    res.metrics["relations_qa_per_image"] = out.accuracy_per_image
    res.counts["relations_qa"], res.protocol["relations_qa"] = out.counts, out.protocol
    res.labels["judge"] = out.protocol["judge"] + (" (offline)" if out.protocol["offline_judge"] else "")
    for r in out.records:
        item = res.items[r["id"]]
        item["qa_correct"] = item.get("qa_correct", 0) + int(r["correct"])
        item["qa_asked"] = item.get("qa_asked", 0) + 1


@metric("bleu_meteor", [("bleu4", "BLEU-4", True), ("meteor", "METEOR", True)], order=40)
def bleu_meteor(ev, bench, refs, captions, res) -> None:
    from cim.eval.text_metrics import bleu_meteor as score

    out = score({k: v for k, v in refs.items() if v}, captions)
    res.metrics["bleu4"], res.metrics["meteor"] = out["bleu4"], out["meteor"]
    res.counts["bleu_meteor"], res.protocol["bleu_meteor"] = out["counts"], out["protocol"]


@metric("cim", [("cim", "CIM Υ", False)], order=50)
def cim(ev, bench, refs, captions, res) -> None:
    from cim.reward.scorer import score_in_batches

    scorer = ev.scorer()
    samples = bench.by_id()
    ids = list(captions)
    _, found = scorer.index.source_embeddings(ids) if ids else (None, np.zeros(0, bool))
    items = []
    for i, ok in zip(ids, found):
        item = {"caption": captions[i]}
        if ok:
            item["image_id"] = i
        elif samples[i].image is not None:
            item["image"] = str(samples[i].image)
        else:
            item["image_id"] = i          # reported as an unknown id by the scorer
        items.append(item)
    out = score_in_batches(scorer, items, ev.cfg.reward.batch_size)
    ok = [(i, r) for i, r in zip(ids, out) if r["error"] is None]
    errors: dict[str, int] = {}
    for r in out:
        if r["error"]:
            key = r["error"].split(":")[0][:60]
            errors[key] = errors.get(key, 0) + 1
    for name, key in (("cim", "score"), ("cim_grc", "grc"), ("cim_qir", "qir")):
        res.metrics[name] = float(np.mean([r[key] for _, r in ok])) if ok else float("nan")
    for i, r in ok:
        res.items[i].update(cim=r["score"], grc=r["grc"], qir=r["qir"])
    res.counts["cim"] = {"scored": len(ok), "failed": len(out) - len(ok), "errors": errors}
    res.protocol["cim"] = {"metric": "CIM reward Υ = GRC + β·QIR (paper Eqs. 1-3), mean over captions",
                           "top_k": scorer.top_k, "decay": scorer.decay, "beta": scorer.beta, "mode": scorer.mode,
                           "exclude_source": scorer.exclude_source,
                           "encoders": scorer.index.meta.get("encoders"), "index_rows": len(scorer.index.ids)}


# ----------------------------------------------------------------------------------- benchmark experiments
def _verification_headline(ver: dict) -> dict:
    return {f"pearson_r_{m}": ver[m]["pearson_r"] for m in ("grc", "qir", "score") if finite(ver[m]["pearson_r"])}


@metric("verification", scope="benchmark", requires=("cim",), headline=_verification_headline)
def verification(ev, bench, results, out_dir) -> Optional[dict]:
    """The paper's Fig. 2 experiment over every method's captions (:mod:`cim.eval.accuracy_correlation`),
    with the classifier the benchmark's format provides."""
    from cim.eval.accuracy_correlation import plot_verification, verification as binned

    classifier = bench.format.classifier(bench, ev.judge)
    if classifier is None:
        raise ValueError(f"benchmark format {bench.spec.format!r} has no labels for the verification experiment")
    samples = bench.by_id()
    rows = []
    for r in results:
        ids = [i for i, it in r.items.items() if it.get("caption") is not None]
        marks = classifier.correct([r.items[i]["caption"] for i in ids], [samples[i] for i in ids])
        for i, (coarse, fine) in zip(ids, marks):
            it = r.items[i]
            rows.append({"method": r.method, "id": i, "grc": it.get("grc"), "qir": it.get("qir"),
                         "score": it.get("cim"), "coarse_correct": coarse, "fine_correct": fine})
    if not rows:
        return None
    bin_size = ev.cfg.eval.bin_size
    result = binned(rows, bin_size)
    result["classifier"] = classifier.name
    result["methods"] = sorted({r.method for r in results})
    result["per_method_accuracy"] = {
        m: {"coarse": float(np.mean([x["coarse_correct"] for x in rows if x["method"] == m])),
            "fine": float(np.mean([x["fine_correct"] for x in rows if x["method"] == m]))}
        for m in result["methods"]}
    write_json(out_dir / "verification.json", result)
    plot_verification(result, out_dir / "verification.png",
                      f"{bench.name}: bins of {bin_size} captions ({result['classifier']})")
    return result


def _parser_headline(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k.endswith(("_recall", "_precision")) and finite(v)}


@metric("parser_recall", scope="benchmark", headline=_parser_headline, tracking="parser")
def parser_recall(ev, bench, results, out_dir) -> Optional[dict]:
    """The parser's recall and precision against the ground-truth scene graphs of samples that have them
    (the demo world's reference captions state their graphs)."""
    from cim.eval.world_truth import parser_recall as measure

    pairs = [(s.references[0], s.scene_graph) for s in bench.samples if s.scene_graph and s.references]
    if not pairs:
        return None
    result = measure(ev.parser(), [p[0] for p in pairs], [p[1] for p in pairs])
    write_json(out_dir / "parser_recall.json", result)
    return result
