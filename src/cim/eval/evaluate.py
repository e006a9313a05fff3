"""The evaluate stage as a library: benchmarks x captions -> metrics -> results files, table, verification.

``Evaluator(cfg).run()`` does, for every benchmark in ``cfg.eval.benchmarks``:

1. load it (:mod:`cim.eval.benchmarks`; on the demo world the ground-truth scene graphs stand in for the
   GPT object/attribute lists);
2. get captions per *method* (table row): the world's graded captions, one row per level
   (``captioner.name=levels``), a captions file, or a VLM run now (``hf`` / ``vllm``; written to
   ``<out_dir>/<benchmark>/<method>/captions.jsonl`` with prompt and decoding settings);
3. compute the benchmark's metrics (or ``eval.metrics``): CAPTURE, SC-Captioner's Objects / Attributes,
   Relations QA, BLEU-4 / METEOR, the CIM score itself (Υ, GRC, QIR) — each isolated: a metric that cannot
   run (no Java, no index, weights absent) is an ``errors`` entry in the result, not a crash;
4. write ``results.json`` and ``items.jsonl`` (per caption) per method, the markdown table of every method
   found under ``<out_dir>/<benchmark>/`` with deltas against ``eval.baseline``, and, where declared, the
   verification experiment (bins -> Pearson r, ``verification.json`` + ``verification.png``) and the
   parser's recall against the world's ground truth (``parser_recall.json``).

Every result records which parser, text encoder and judge produced it, and each metric's protocol.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cim.eval.benchmarks import Benchmark, load_benchmark

TABLE_FILE = "table.md"


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


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("_") or "method"


class Evaluator:
    """Builds each heavy component once, on first use (parser, text encoder, judge, scorer)."""

    def __init__(self, cfg, root: str | Path = ".", log=print):
        self.cfg, self.ecfg, self.root, self.log = cfg, cfg.eval, Path(root), log
        self._parts: dict[str, Any] = {}

    # -- components ---------------------------------------------------------------------------------
    def _part(self, key: str, build):
        if key not in self._parts:
            self._parts[key] = build()
        return self._parts[key]

    def parser(self):
        from cim.eval.parsers import build_parser

        p = self.ecfg.parser
        return self._part("parser", lambda: build_parser(p.name, p.model or None, p.device))

    def text_encoder(self):
        from omegaconf import OmegaConf

        from cim.encoders import build_text_encoder

        def build():
            tcfg = OmegaConf.to_object(self.cfg.encoders.text) if OmegaConf.is_config(self.cfg.encoders.text) \
                else self.cfg.encoders.text
            if self.ecfg.text_encoder:
                tcfg = dataclasses.replace(tcfg, model=self.ecfg.text_encoder)
            return build_text_encoder(tcfg)
        return self._part("text_encoder", build)

    def capture(self):
        from cim.eval.capture import Capture

        return self._part("capture", lambda: Capture(self.parser(), self.text_encoder(),
                                                     substring=self.ecfg.substring))

    def judge(self):
        from cim.eval.judges import build_judge

        j = self.ecfg.judge
        return self._part("judge", lambda: build_judge(j.name, j.model or None, parser=self.parser(),
                                                       backend=j.backend, device=j.device))

    def scorer(self):
        from cim.reward.scorer import Scorer

        # CAPTURE's encoder is the reward's unless eval.text_encoder names another: load it once
        return self._part("scorer", lambda: Scorer.from_config(
            self.cfg, text_encoder=None if self.ecfg.text_encoder else self.text_encoder()))

    # -- benchmarks and captions --------------------------------------------------------------------
    def load(self, name: str) -> Benchmark:
        bench = load_benchmark(name, self.root, data_dir=self.ecfg.data_dirs.get(name),
                               images=self.ecfg.images.get(name))
        if self.ecfg.max_samples:
            keep = {s.id for s in bench.samples[: self.ecfg.max_samples]}
            bench.samples = [s for s in bench.samples if s.id in keep]
            bench.captions = [c for c in bench.captions if str(c.get("image_id")) in keep]
            bench.counts["samples"] = len(bench.samples)
            bench.counts["limited_to"] = self.ecfg.max_samples
        if bench.spec.format == "demo-world":
            from cim.eval.world_truth import reference_lists

            for s in bench.samples:
                if s.scene_graph:
                    bench.gpt_objects[s.id], bench.gpt_attributes[s.id] = reference_lists(s.scene_graph)
        return bench

    def methods(self, bench: Benchmark) -> list[tuple[str, dict[str, str], dict]]:
        """(method name, {id: caption}, provenance) for every table row this run produces."""
        c = self.ecfg.captioner
        prompt = self.ecfg.prompt or bench.spec.prompt
        if c.name == "levels":
            if not bench.captions:
                raise ValueError(f"captioner=levels needs graded captions (the demo world); {bench.name} has none: "
                                 "set eval.captioner.name=file|hf|vllm")
            rows: dict[str, dict[str, str]] = {}
            for r in bench.captions:
                rows.setdefault(str(r.get("level")), {})[str(r["image_id"])] = r.get("caption") or ""
            return [(level, caps, {"source": "world graded captions", "level": level, "n": len(caps)})
                    for level, caps in sorted(rows.items())]
        from cim.eval.captioners import Decoding, build_captioner, generate_captions

        kwargs: dict[str, Any] = {}
        if c.name in ("hf", "vllm"):
            kwargs["decoding"] = Decoding(max_new_tokens=c.max_new_tokens)
        if c.name == "hf":
            kwargs.update(device=c.device, dtype=c.dtype, batch_size=c.batch_size)
        captioner = build_captioner(c.name, c.model or None, **kwargs)
        method = self.ecfg.method or captioner.name
        out = self.root / self.ecfg.out_dir / bench.name / _slug(method) / "captions.jsonl"
        rows_out, counts = generate_captions(captioner, bench.samples, prompt, out, batch_size=max(1, c.batch_size))
        caps = {r["id"]: r["caption"] for r in rows_out}
        return [(method, caps, {"source": captioner.name, "file": str(out), "prompt": prompt,
                                "describe": captioner.describe(), "counts": counts})]

    # -- metrics ------------------------------------------------------------------------------------
    def evaluate(self, bench: Benchmark, method: str, captions: dict[str, str], metrics: list[str]) -> MethodResult:
        res = MethodResult(bench.name, method)
        refs = {s.id: s.references for s in bench.samples}
        ids = [s.id for s in bench.samples]
        res.items = {i: {"caption": captions.get(i)} for i in ids}
        res.counts["captions"] = {"samples": len(ids), "without_caption": sum(1 for i in ids if i not in captions),
                                  "empty": sum(1 for i in ids if i in captions and not (captions[i] or "").strip()),
                                  "ids_not_in_benchmark": sum(1 for i in captions if i not in refs)}
        for metric in metrics:
            fn = getattr(self, f"_m_{metric}", None)
            if fn is None:
                continue
            t0 = time.perf_counter()
            try:
                fn(bench, captions, refs, res)
            except Exception as exc:  # noqa: BLE001  (one metric failing must not stop the others)
                res.errors[metric] = f"{type(exc).__name__}: {exc}"
                self.log(f"  {bench.name}/{method}: {metric} failed: {res.errors[metric]}")
            else:
                self.log(f"  {bench.name}/{method}: {metric} done in {time.perf_counter() - t0:.1f}s")
        return res

    def _m_capture(self, bench, captions, refs, res):
        cap = self.capture()
        out = cap.compute_score({k: v for k, v in refs.items() if v}, {k: captions[k] for k in refs if k in captions})
        res.metrics["capture"] = out.score
        res.metrics.update({f"capture_{k}": v for k, v in out.components.items()})
        res.counts["capture"], res.protocol["capture"] = out.counts, out.protocol
        res.labels["parser"] = out.protocol["parser"]
        res.labels["text encoder (CAPTURE soft match)"] = str(out.protocol["text_encoder"])
        for k, row in out.per_sample.items():
            res.items[k]["capture"] = row["capture"]

    def _m_fine_grained(self, bench, captions, refs, res):
        from cim.eval.fine_grained import fine_grained_scores

        if not bench.gpt_objects or not bench.gpt_attributes:
            raise ValueError(f"{bench.name} has no object/attribute reference lists")
        out = fine_grained_scores(self.capture(), refs, {k: captions[k] for k in refs if k in captions},
                                  bench.gpt_objects, bench.gpt_attributes)
        res.metrics.update(out.components)
        res.counts["fine_grained"], res.protocol["fine_grained"] = out.counts, out.protocol
        if bench.spec.format == "demo-world":
            res.protocol["fine_grained"]["reference_lists"] = "ground-truth scene graphs in place of GPT's lists"

    def _m_relations_qa(self, bench, captions, refs, res):
        from cim.eval.judges import relations_qa

        questions = {k: q for k, q in bench.questions.items() if k in refs}
        out = relations_qa(self.judge(), questions, {k: captions[k] for k in refs if k in captions})
        res.metrics["relations_qa"] = out.accuracy
        res.metrics["relations_qa_per_image"] = out.accuracy_per_image
        res.counts["relations_qa"], res.protocol["relations_qa"] = out.counts, out.protocol
        res.labels["judge"] = out.protocol["judge"] + (" (offline)" if out.protocol["offline_judge"] else "")
        for r in out.records:
            item = res.items[r["id"]]
            item["qa_correct"] = item.get("qa_correct", 0) + int(r["correct"])
            item["qa_asked"] = item.get("qa_asked", 0) + 1

    def _m_bleu_meteor(self, bench, captions, refs, res):
        from cim.eval.text_metrics import bleu_meteor

        out = bleu_meteor({k: v for k, v in refs.items() if v}, {k: captions[k] for k in refs if k in captions})
        res.metrics["bleu4"], res.metrics["meteor"] = out["bleu4"], out["meteor"]
        res.counts["bleu_meteor"], res.protocol["bleu_meteor"] = out["counts"], out["protocol"]

    def _m_cim(self, bench, captions, refs, res):
        scorer = self.scorer()
        samples = bench.by_id()
        ids = [i for i in refs if i in captions]
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
        out = []
        for start in range(0, len(items), self.cfg.reward.batch_size):
            out.extend(scorer.score(items[start:start + self.cfg.reward.batch_size]))
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
        idx_meta = scorer.index.meta
        res.protocol["cim"] = {"metric": "CIM reward Υ = GRC + β·QIR (paper Eqs. 1-3), mean over captions",
                               "top_k": scorer.top_k, "decay": scorer.decay, "beta": scorer.beta, "mode": scorer.mode,
                               "exclude_source": scorer.exclude_source,
                               "encoders": idx_meta.get("encoders"), "index_rows": len(scorer.index.ids)}

    # -- per-benchmark extras -------------------------------------------------------------------------
    def verification(self, bench: Benchmark, results: list[MethodResult], out_dir: Path) -> Optional[dict]:
        from cim.eval.accuracy_correlation import plot_verification, pet_rule_classifier, verification, world_classifier

        samples = bench.by_id()
        rows = []
        lm = None
        if bench.spec.format == "oxford-pet" and self.ecfg.judge.name != "triples":
            from cim.eval.accuracy_correlation import LMClassifier

            lm = LMClassifier(self.judge(), sorted({s.labels["coarse"] for s in bench.samples}),
                              sorted({s.labels["fine"] for s in bench.samples}))
        for r in results:
            ids = [i for i, it in r.items.items() if it.get("caption") is not None]
            picks = lm.classify([r.items[i]["caption"] for i in ids]) if lm else None
            for n, i in enumerate(ids):
                it, s = r.items[i], samples[i]
                if bench.spec.format == "demo-world":
                    coarse, fine = world_classifier(it["caption"], s.scene_graph)
                elif picks is not None:
                    coarse, fine = picks[n][0] == s.labels["coarse"], picks[n][1] == s.labels["fine"]
                else:
                    coarse, fine = pet_rule_classifier(it["caption"], s.labels["coarse"], s.labels["fine"])
                rows.append({"method": r.method, "id": i, "grc": it.get("grc"), "qir": it.get("qir"),
                             "score": it.get("cim"), "coarse_correct": coarse, "fine_correct": fine})
        if not rows:
            return None
        result = verification(rows, self.ecfg.bin_size)
        result["classifier"] = (lm.name if lm else ("offline rule: cim.data.world_scene.names_fine_label"
                                if bench.spec.format == "demo-world" else "offline rule: species/breed names"))
        result["methods"] = sorted({r.method for r in results})
        result["per_method_accuracy"] = {
            m: {"coarse": float(np.mean([x["coarse_correct"] for x in rows if x["method"] == m])),
                "fine": float(np.mean([x["fine_correct"] for x in rows if x["method"] == m]))}
            for m in result["methods"]}
        _write_json(out_dir / "verification.json", result)
        plot_verification(result, out_dir / "verification.png",
                          f"{bench.name}: bins of {self.ecfg.bin_size} captions ({result['classifier']})")
        return result

    def parser_recall(self, bench: Benchmark, out_dir: Path) -> Optional[dict]:
        from cim.eval.world_truth import parser_recall

        pairs = [(s.references[0], s.scene_graph) for s in bench.samples if s.scene_graph and s.references]
        if not pairs:
            return None
        result = parser_recall(self.parser(), [p[0] for p in pairs], [p[1] for p in pairs])
        _write_json(out_dir / "parser_recall.json", result)
        return result

    # -- the whole run --------------------------------------------------------------------------------
    def run(self) -> dict:
        from cim.eval.results import markdown_table

        summary: dict[str, Any] = {"benchmarks": {}, "results": []}
        for name in self.ecfg.benchmarks:
            t0 = time.perf_counter()
            bench = self.load(name)
            out_dir = self.root / self.ecfg.out_dir / bench.name
            metrics = list(self.ecfg.metrics) or list(bench.spec.metrics)
            self.log(f"{bench.name}: {bench.counts['samples']} samples, metrics {', '.join(metrics)}")
            info: dict[str, Any] = {"report": bench.report(), "metrics": metrics}
            results = []
            for method, caps, provenance in self.methods(bench):
                r = self.evaluate(bench, method, caps, metrics)
                r.captions = provenance
                r.counts["benchmark"] = dict(bench.counts)
                mdir = out_dir / _slug(method)
                _write_json(mdir / "results.json", r.to_dict())
                mdir.mkdir(parents=True, exist_ok=True)
                (mdir / "items.jsonl").write_text("".join(json.dumps(_clean({"id": k, **v}), ensure_ascii=False) + "\n"
                                                          for k, v in r.items.items()), encoding="utf-8")
                results.append(r)
            if "verification" in metrics:
                if "cim" not in metrics:
                    info["verification_error"] = "verification needs the cim metric (GRC, QIR, Υ per caption)"
                else:
                    info["verification"] = self.verification(bench, results, out_dir)
            if "parser_recall" in metrics:
                info["parser_recall"] = self.parser_recall(bench, out_dir)
            all_results = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/results.json"))]
            table = markdown_table(all_results, self.ecfg.baseline)
            (out_dir / TABLE_FILE).write_text(table, encoding="utf-8")
            info["table"] = str(out_dir / TABLE_FILE)
            info["seconds"] = round(time.perf_counter() - t0, 1)
            _write_json(out_dir / "benchmark.json", info)
            summary["benchmarks"][bench.name] = info
            summary["results"].extend(all_results)
        return summary
