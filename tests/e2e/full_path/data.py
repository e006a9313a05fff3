"""The full-tiny profile's data, drawn by the project's demo-world generator (:mod:`cim.data.world`) and
written in the formats of the real releases:

- ``data/release/train_sft.json``: the training pairs in SC-Captioner's ``train_coco6k_sft.json`` format
  (LLaMA-Factory messages: the user turn ``<image>`` + prompt, the assistant turn the reference caption);
- ``data/release/densefusion.jsonl``: the other corpus pairs in DenseFusion-1M's format (``image_id``,
  ``image_path``, ``caption``);
- ``data/benchmarks/full-tiny/``: a held-out benchmark in SC-Captioner's evaluation format (references,
  GPT-style object list and attribute lists, yes/no relation questions; the lists and questions are read
  from the scenes' ground truth, as the demo-world benchmark does) and ``configs/benchmarks/full-tiny.yaml``;
- ``data/world/sources.jsonl``: the source images (training + benchmark) the index embeds by id.

``cim manifest`` turns the two release files into the gallery (training pairs first, as the release).
"""
from __future__ import annotations

import json
from pathlib import Path

from cim.io import read_jsonl

__all__ = ["WORLD", "BENCHMARK", "build", "tokenizer_texts"]

BENCHMARK = "full-tiny"
# a tiny world: 48 corpus pairs (8 of them training images), 6 held-out benchmark images of 64 px
WORLD = {"seed": 0, "n_corpus": 48, "n_train": 8, "n_bench": 6, "image_size": 64,
         "corpus_detail_mix": [0.3, 0.3, 0.4], "n_families": 6, "variants_per_family": 2, "attribute_noise": 0.1}
PROMPT = "Describe this image in detail."


def _write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def build(out: Path) -> dict:
    """Generate the world under ``out/data/world`` and write the release-format files; returns their paths."""
    import yaml

    from cim.data.world import generate_world
    from cim.eval.benchmarks.demo_world import world_questions
    from cim.eval.world_truth import reference_lists

    world = out / "data" / "world"
    generate_world(WORLD, world, progress=False)
    rows = {name: [r for _, r in read_jsonl(world / f"{name}.jsonl")] for name in ("corpus", "train", "bench")}
    train_ids = {r["id"] for r in rows["train"]}
    release = out / "data" / "release"
    sft = [{"id": r["id"], "images": [Path(r["image"]).name],
            "messages": [{"role": "user", "content": "<image>" + PROMPT},
                         {"role": "assistant", "content": r["reference"]}]} for r in rows["train"]]
    _write_json(release / "train_sft.json", sft)
    dense = release / "densefusion.jsonl"
    dense.write_text("".join(json.dumps({"image_id": r["id"], "image_path": Path(r["image"]).name,
                                         "caption": r["text"]}) + "\n"
                             for r in rows["corpus"] if r["id"] not in train_ids), encoding="utf-8")
    bench_dir = out / "data" / "benchmarks" / BENCHMARK
    refs, objects, attributes, questions = {}, [], {}, {}
    for r in rows["bench"]:
        refs[r["id"]] = r["reference"]
        objs, attrs = reference_lists(r["scene_graph"])
        objects.append({r["id"]: objs})
        attributes[r["id"]] = attrs
        questions[r["id"]] = world_questions(r["scene_graph"])
    files = {"references": "test_full_tiny_gt.json", "gpt_objects": "full_tiny_gpt_objects.jsonl",
             "gpt_attributes": "full_tiny_gpt_attributes.json", "questions": "questions_full_tiny.json"}
    _write_json(bench_dir / files["references"], refs)
    (bench_dir / files["gpt_objects"]).write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    _write_json(bench_dir / files["gpt_attributes"], attributes)
    _write_json(bench_dir / files["questions"], questions)
    spec = {"name": BENCHMARK, "format": "sc-captioner",
            "description": "full-tiny smoke benchmark: demo-world images in SC-Captioner's file format",
            "data_dir": f"data/benchmarks/{BENCHMARK}", "files": files, "images": "data/world/images",
            "image_patterns": ["{id}.png"], "prompt": PROMPT,
            "metrics": ["capture", "fine_grained", "relations_qa", "bleu_meteor", "cim"],
            "capture_encoder": "all-mpnet-base-v2"}
    spec_path = out / "configs" / "benchmarks" / f"{BENCHMARK}.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return {"world": str(world), "train_sft": str(release / "train_sft.json"), "densefusion": str(dense),
            "images": str(world / "images"), "sources": str(world / "sources.jsonl"), "benchmark": str(spec_path),
            "counts": {"corpus": len(rows["corpus"]), "train": len(rows["train"]), "bench": len(rows["bench"]),
                       "questions": sum(len(q) for q in questions.values())}}


def tokenizer_texts(out: Path) -> list[str]:
    """What the tiny tokenizers are trained on: the world's captions, the prompt, FACTUAL-style graphs and
    the judge's words (every text the chain tokenizes is mostly made of known pieces)."""
    world = out / "data" / "world"
    texts = [PROMPT, "Generate Scene Graph:", "yes no unknown", "Here is a description of an image:",
             "Using only this description, answer the question:", "( circle , is , red ) , ( circle , left of , square )"]
    for name, key in (("corpus", "text"), ("train", "reference"), ("bench", "reference")):
        texts += [r[key] for _, r in read_jsonl(world / f"{name}.jsonl")]
    return texts * 4
