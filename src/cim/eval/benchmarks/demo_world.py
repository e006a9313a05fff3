"""``demo-world``: the generated world's held-out split (:mod:`cim.data.world`, ``cim prepare``).

Files: ``bench.jsonl`` (id, image, scene_graph, reference, coarse_label, fine_label) and
``bench_captions.jsonl`` (image_id, caption, level, quality). The ground-truth scene graphs give

- the yes/no relation questions: each stated relation asked as is -> "Yes", and with its inverse -> "No"
  (a symmetric relation such as ``next to`` has no negative; relation table: :mod:`cim.relations`);
- the fine-grained metrics' object / attribute reference lists, in place of SC-Captioner's GPT lists
  (:func:`cim.eval.world_truth.reference_lists`);
- the verification labels: coarse = the main object's shape, fine = its colour, texture and shape, read by
  the offline rule :func:`cim.data.world_scene.names_fine_label`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cim.eval.accuracy_correlation import RuleClassifier, world_classifier
from cim.plugins import BENCHMARK_FORMATS
from cim.eval.benchmarks import (Benchmark, BenchmarkError, BenchmarkFormat, BenchmarkSpec, Sample,
                                 count_images, read_rows, resolve_path)
from cim.relations import WORLD_INVERSE, WORLD_PHRASES


def world_questions(scene: dict) -> dict[str, str]:
    """Yes/no relation questions from a demo-world scene graph: each relation as stated ("Yes") and with
    its inverse ("No"; a symmetric relation such as ``next to`` gets no negative)."""
    objs = scene.get("objects", [])

    def name(o: dict) -> str:
        return " ".join(["the", o.get("colour", ""), o.get("shape", "object")]).replace("  ", " ")

    def say(relation: str) -> str:
        return WORLD_PHRASES[relation][0]

    out: dict[str, str] = {}
    for rel in scene.get("relations", []):
        s, o, r = objs[rel["subject"]], objs[rel["object"]], rel["relation"]
        out[f"Is {name(s)} {say(r)} {name(o)}?"] = "Yes"
        if WORLD_INVERSE[r] != r:
            out[f"Is {name(s)} {say(WORLD_INVERSE[r])} {name(o)}?"] = "No"
    return out


@BENCHMARK_FORMATS.register("demo-world")
class DemoWorld(BenchmarkFormat):
    reference_note = "ground-truth scene graphs in place of GPT's lists"

    def load(self, spec: BenchmarkSpec, root: Path) -> Benchmark:
        data_dir = resolve_path(root, spec.data_dir)
        files = {"bench": "bench.jsonl", "captions": "bench_captions.jsonl", **spec.files}
        bench_file = data_dir / files["bench"]
        if not bench_file.is_file():
            raise BenchmarkError(f"benchmark {spec.name!r}: {bench_file} not found; generate the world first "
                                 "(`cim prepare`)")
        images = resolve_path(root, spec.images) if spec.images else data_dir
        samples = []
        for row in read_rows(bench_file):
            img = Path(row["image"])
            img = img if img.is_absolute() else images / img
            samples.append(Sample(str(row["id"]), img if img.is_file() else None, [row.get("reference", "")],
                                  labels={"coarse": row.get("coarse_label", ""), "fine": row.get("fine_label", "")},
                                  scene_graph=row.get("scene_graph")))
        bench = Benchmark(spec, samples)
        bench.questions = {s.id: world_questions(s.scene_graph or {}) for s in samples}
        cap_file = data_dir / files["captions"]
        ids = {s.id for s in samples}
        if cap_file.is_file():
            bench.captions = read_rows(cap_file)
            stray = sorted({str(r.get("image_id")) for r in bench.captions} - ids)
            bench.problems["caption_ids_not_in_bench"] = stray
            bench.counts["caption_ids_not_in_bench"] = len(stray)
        bench.counts["questions"] = sum(len(q) for q in bench.questions.values())
        return count_images(bench)

    def reference_lists(self, bench: Benchmark) -> tuple[dict, dict]:
        from cim.eval.world_truth import reference_lists

        if not bench.gpt_objects:      # computed once per loaded (and limited) benchmark
            for s in bench.samples:
                if s.scene_graph:
                    bench.gpt_objects[s.id], bench.gpt_attributes[s.id] = reference_lists(s.scene_graph)
        return bench.gpt_objects, bench.gpt_attributes

    def classifier(self, bench: Benchmark, judge: Callable[[], Any]):
        return RuleClassifier("offline rule: cim.data.world_scene.names_fine_label",
                              lambda caption, s: world_classifier(caption, s.scene_graph))
