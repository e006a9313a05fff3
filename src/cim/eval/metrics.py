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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

from cim.io import write_json
from cim.plugins import METRICS

__all__ = ["Column", "Metric", "METRICS", "metric", "table_columns", "label", "finite"]


class Column(NamedTuple):
    key: str              # the key in result.metrics
    header: str           # the table's column header
    percent: bool         # shown x100 (fractions) rather than raw
    summary: bool = True  # also in the compact table (the captioners' comparison, the README)
    lower_better: bool = False   # a smaller value is the better one (repetition): tables mark it (:func:`label`)


def label(column: Column) -> str:
    """The column's header as tables and plots show it: ``Rep-3 ↓`` for a lower-is-better column (its deltas
    keep their sign: a negative delta is less of it)."""
    return column.header + (" ↓" if column.lower_better else "")


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
    # method scope: how each column decomposes over samples (see :meth:`sample_stats`); None: per-sample means
    stats: Optional[Callable[[list], dict]] = None

    def sample_stats(self, items: list[dict]) -> dict[str, tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]:
        """``{column: (parts, finish)}`` over ``items`` (one dict per sample, what the compute function left):
        ``parts`` is an ``(n_samples, d)`` array and ``finish`` turns sums of its rows, ``(b, d)``, into the
        column's values, ``(b,)``. So ``finish(weights @ parts)`` is the column over any weighting of the samples
        (all ones: the metric; a bootstrap draw: a resample), for means, ratios and corpus scores alike."""
        if self.stats is not None:
            return self.stats(items)
        return {col.key: mean_stats(items, col.key) for col in self.columns}


def mean_stats(items: list[dict], key: str) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """A column that is the mean of its per-sample values over the samples that have one."""
    values = np.array([float(it[key]) if finite(it.get(key)) else np.nan for it in items], dtype=float)
    has = np.isfinite(values)
    return np.stack([np.where(has, values, 0.0), has.astype(float)], axis=1), _ratio


def _ratio(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 1] > 0, sums[:, 0] / np.where(sums[:, 1] > 0, sums[:, 1], 1.0), np.nan)


def metric(name: str) -> Metric:
    """The registered metric ``name``: its compute function with what it was registered with
    (``@METRICS.register(name, columns=[(key, header, x100[, summary[, lower_better]])], scope=..., order=...,
    requires=..., headline=..., stats=...)``)."""
    info = METRICS.info(name)
    scope = info.get("scope", "method")
    if scope not in ("method", "benchmark"):
        raise ValueError(f"metric {name!r}: scope must be method or benchmark, got {scope!r}")
    return Metric(name, METRICS.get(name), tuple(Column(*c) for c in info.get("columns", ())), scope,
                  info.get("order", 100), tuple(info.get("requires", ())), info.get("headline"),
                  info.get("tracking") or name, info.get("stats"))


def table_columns() -> list[Column]:
    """Every registered method metric's columns, in ``order`` (the results table)."""
    ms = sorted((m for m in map(metric, METRICS.names()) if m.scope == "method"), key=lambda m: (m.order, m.name))
    return [c for m in ms for c in m.columns]


def finite(value) -> bool:
    """A number that is not NaN (what metrics.json and MLflow keep)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------- method metrics
@METRICS.register("capture", columns=[("capture", "CAPTURE", True), ("capture_object_f1", "CAP obj F1", True, False),
                                      ("capture_attribute_f1", "CAP attr F1", True, False),
                                      ("capture_relation_f1", "CAP rel F1", True, False)], order=10)
def capture(ev, bench, refs, captions, res) -> None:
    out = ev.capture(bench).compute_score({k: v for k, v in refs.items() if v}, captions)
    res.metrics["capture"] = out.score
    res.metrics.update({f"capture_{k}": v for k, v in out.components.items()})
    res.counts["capture"], res.protocol["capture"] = out.counts, out.protocol
    res.labels["parser"] = out.protocol["parser"]
    res.labels["text encoder (CAPTURE soft match)"] = str(out.protocol["text_encoder"])
    for k, row in out.per_sample.items():
        res.items[k]["capture"] = row["capture"]
        res.items[k].update({f"capture_{c}_f1": row[f"{c}_f1"] for c in ("object", "attribute", "relation")})


@METRICS.register("fine_grained", columns=[("object_precision", "Obj P", True, False),
                                           ("object_recall", "Obj R", True, False), ("object_f1", "Obj F1", True),
                                           ("attribute_precision", "Attr P", True, False),
                                           ("attribute_recall", "Attr R", True, False),
                                           ("attribute_f1", "Attr F1", True)], order=20)
def fine_grained(ev, bench, refs, captions, res) -> None:
    from cim.eval.fine_grained import fine_grained_scores

    objects, attributes = bench.reference_lists()
    if not objects or not attributes:
        raise ValueError(f"{bench.name} has no object/attribute reference lists")
    out = fine_grained_scores(ev.capture(bench), refs, captions, objects, attributes)
    res.metrics.update(out.components)
    for k, row in out.per_sample.items():
        res.items[k].update(row)
    res.counts["fine_grained"], res.protocol["fine_grained"] = out.counts, out.protocol
    if bench.format.reference_note:
        res.protocol["fine_grained"]["reference_lists"] = bench.format.reference_note


def _qa_stats(items: list[dict]) -> dict:
    """Relations QA is an accuracy over questions: correct / asked, summed over samples."""
    parts = np.array([[it.get("qa_correct", 0), it.get("qa_asked", 0)] for it in items], dtype=float)
    return {"relations_qa": (parts, _ratio)}


@METRICS.register("relations_qa", columns=[("relations_qa", "Rel QA", True)], order=30, stats=_qa_stats)
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


def _bleu_meteor_stats(items: list[dict]) -> dict:
    """Corpus BLEU-4 and METEOR from summed per-caption statistics (:mod:`cim.eval.text_metrics`)."""
    from cim.eval.text_metrics import bleu_from_stats, meteor_from_stats

    out = {}
    for key, field_, size, score in (("bleu4", "bleu_stats", 10, bleu_from_stats),
                                     ("meteor", "meteor_stats", 23, meteor_from_stats)):
        parts = np.array([it.get(field_) or [0.0] * size for it in items], dtype=float).reshape(len(items), size)
        out[key] = (parts, lambda sums, score=score: np.array([score(row) for row in sums]))
    return out


@METRICS.register("bleu_meteor", columns=[("bleu4", "BLEU-4", True), ("meteor", "METEOR", True)], order=40,
                  stats=_bleu_meteor_stats)
def bleu_meteor(ev, bench, refs, captions, res) -> None:
    from cim.eval.text_metrics import bleu_meteor as score

    out = score({k: v for k, v in refs.items() if v}, captions)
    res.metrics["bleu4"], res.metrics["meteor"] = out["bleu4"], out["meteor"]
    for k, stats in out["per_sample"].items():
        res.items[k].update(stats)
    res.counts["bleu_meteor"], res.protocol["bleu_meteor"] = out["counts"], out["protocol"]


@METRICS.register("cim", columns=[("cim", "CIM Υ", False), ("cim_grc", "GRC", False, False),
                                  ("cim_qir", "QIR", False, False)], order=50)
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
        res.items[i].update(cim=r["score"], cim_grc=r["grc"], cim_qir=r["qir"])
    res.counts["cim"] = {"scored": len(ok), "failed": len(out) - len(ok), "errors": errors}
    res.protocol["cim"] = {"metric": "CIM reward Υ = GRC + β·QIR (paper Eqs. 1-3), mean over captions",
                           **scorer.settings(),
                           "encoders": scorer.index.meta.get("encoders"), "index_rows": len(scorer.index.ids)}


@METRICS.register("ground_truth", columns=[("gt_object_recall", "GT obj R", True),
                                           ("gt_attribute_recall", "GT attr R", True),
                                           ("gt_attribute_precision", "GT attr P", True),
                                           ("gt_relation_recall", "GT rel R", True)], order=60)
def ground_truth(ev, bench, refs, captions, res) -> None:
    """Recall (and attribute precision) against the samples' ground-truth scene graphs, no parser: the demo
    world's (:func:`cim.eval.world_truth.scene_recall`); each the mean over the captioned samples with a graph
    (relation recall over those whose graph has relations)."""
    from cim.eval.world_truth import scene_recall

    graphs = {s.id: s.scene_graph for s in bench.samples if s.scene_graph and s.id in captions}
    if not graphs:
        raise ValueError(f"{bench.name} has no ground-truth scene graphs")
    values: dict[str, list[float]] = {}
    for i, graph in graphs.items():
        for key, value in scene_recall(captions[i], graph).items():
            if math.isfinite(value):
                values.setdefault(key, []).append(value)
                res.items[i][f"gt_{key}"] = value
    res.metrics.update({f"gt_{k}": float(np.mean(v)) for k, v in values.items()})
    res.counts["ground_truth"] = {"scored": len(graphs), **{f"{k}_samples": len(v) for k, v in values.items()}}
    res.protocol["ground_truth"] = {"metric": "recall against the ground-truth scene graph (no parser)",
                                    "definition": "cim.eval.world_truth.scene_recall"}


@METRICS.register("caption_words", columns=[("caption_words", "words", False)], order=70)
def caption_words(ev, bench, refs, captions, res) -> None:
    """The mean caption length in words (whitespace tokens) over the captioned samples."""
    words = {i: len((c or "").split()) for i, c in captions.items()}
    for i, n in words.items():
        res.items[i]["caption_words"] = n
    res.metrics["caption_words"] = float(np.mean(list(words.values()))) if words else float("nan")
    res.counts["caption_words"] = {"scored": len(words)}


@METRICS.register("repetition", columns=[("repetition", "Rep-3", True, True, True)], order=75)
def repetition(ev, bench, refs, captions, res) -> None:
    """The share of a caption's word trigrams that repeat an earlier trigram of the same caption
    (:func:`cim.reward.text.repeated_ngram_rate`: the measure the repetition guard penalises and the sentinels
    watch), mean over the captioned samples. Lower is better (0: no caption repeats itself)."""
    from cim.reward.text import repeated_ngram_rate

    for i, c in captions.items():
        res.items[i]["repetition"] = repeated_ngram_rate(c or "", 3)
    res.metrics["repetition"] = float(np.mean([res.items[i]["repetition"] for i in captions])) if captions \
        else float("nan")
    res.counts["repetition"] = {"scored": len(captions)}
    res.protocol["repetition"] = {"metric": "share of repeated word trigrams per caption, mean over captions "
                                            "(lower is better)", "definition": "cim.reward.text.repeated_ngram_rate"}


# ----------------------------------------------------------------------------------- benchmark experiments
def _verification_headline(ver: dict) -> dict:
    return {f"pearson_r_{m}": ver[m]["pearson_r"] for m in ("grc", "qir", "score") if finite(ver[m]["pearson_r"])}


@METRICS.register("verification", scope="benchmark", requires=("cim",), headline=_verification_headline)
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
            rows.append({"method": r.method, "id": i, "grc": it.get("cim_grc"), "qir": it.get("cim_qir"),
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
    png = Path(out_dir) / "verification.png"
    if any(finite(result[m]["pearson_r"]) for m in ("grc", "qir", "score")):
        plot_verification(result, png, f"{bench.name}: bins of {bin_size} captions ({result['classifier']})")
    else:                 # too few bins for a correlation (one captioner's captions): no plot, not a stale one
        png.unlink(missing_ok=True)
    return result


def _parser_headline(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k.endswith(("_recall", "_precision")) and finite(v)}


@METRICS.register("parser_recall", scope="benchmark", headline=_parser_headline, tracking="parser")
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
