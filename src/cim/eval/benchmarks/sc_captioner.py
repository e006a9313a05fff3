"""``sc-captioner``: COCO-LN500 and DOCCI500 as published by SC-Captioner (zl2048/SC-Captioner).

Files (``files:`` roles): ``references`` ``{id: caption}``, ``gpt_objects`` jsonl of ``{id: [object, ...]}``,
``gpt_attributes`` ``{id: {object: [attribute, ...]}}``, ``questions`` ``{id: {question: answer}}``. Ids in
an auxiliary file but not in the references are counted (``ids_not_in_references``). The GPT lists are
the fine-grained metrics' reference lists; there are no class labels (no verification experiment).
"""
from __future__ import annotations

from pathlib import Path

from cim.plugins import BENCHMARK_FORMATS
from cim.eval.benchmarks import (Benchmark, BenchmarkError, BenchmarkFormat, BenchmarkSpec, Sample,
                                 count_images, find_image, read_json, read_rows,
                                 required_file, resolve_path)


@BENCHMARK_FORMATS.register("sc-captioner")
class SCCaptioner(BenchmarkFormat):
    def load(self, spec: BenchmarkSpec, root: Path) -> Benchmark:
        data_dir = resolve_path(root, spec.data_dir)
        images = resolve_path(root, spec.images) if spec.images else None
        refs = read_json(required_file(spec, data_dir, "references"))
        if not isinstance(refs, dict):
            raise BenchmarkError(f"{spec.name}: references must be a JSON object {{id: caption}}")
        samples = []
        empty = []
        for sid in sorted(refs):
            text = refs[sid]
            texts = [text] if isinstance(text, str) else list(text)
            if not any(t and t.strip() for t in texts):
                empty.append(sid)
            samples.append(Sample(sid, find_image(images, spec.image_patterns, sid), texts))
        bench = Benchmark(spec, samples, problems={"empty_references": empty})
        bench.counts["empty_references"] = len(empty)
        ids = set(refs)
        stray: list[str] = []
        if "gpt_objects" in spec.files:
            for row in read_rows(required_file(spec, data_dir, "gpt_objects")):
                for sid, objs in row.items():
                    bench.gpt_objects[str(sid)] = [str(o) for o in objs]
        if "gpt_attributes" in spec.files:
            bench.gpt_attributes = {str(k): {str(o): [str(a) for a in v] for o, v in d.items()}
                                    for k, d in read_json(required_file(spec, data_dir, "gpt_attributes")).items()}
        if "questions" in spec.files:
            bench.questions = {str(k): {str(q): str(a) for q, a in d.items()}
                               for k, d in read_json(required_file(spec, data_dir, "questions")).items()}
        for table in (bench.gpt_objects, bench.gpt_attributes, bench.questions):
            stray.extend(k for k in table if k not in ids)
        bench.problems["ids_not_in_references"] = sorted(set(stray))
        bench.counts["ids_not_in_references"] = len(set(stray))
        bench.counts["questions"] = sum(len(q) for k, q in bench.questions.items() if k in ids)
        return count_images(bench)
