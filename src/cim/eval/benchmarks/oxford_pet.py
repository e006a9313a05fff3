"""``oxford-pet``: Oxford-IIIT Pet in its release format, for the verification experiment (paper §3.1-3.2).

``images/<name>.jpg`` and ``annotations/list.txt`` (``Image CLASS-ID SPECIES BREED-ID``; species 1 = cat,
2 = dog; the breed is the image name without its trailing number). Labels: ``coarse`` = species, ``fine`` =
breed. Classifier: an LLM picks species and breed from the caption when the configured judge is a language
model (the paper's protocol), else the offline species/breed-name rule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cim.eval.accuracy_correlation import LMClassifier, RuleClassifier, pet_rule_classifier
from cim.plugins import BENCHMARK_FORMATS
from cim.eval.benchmarks import (Benchmark, BenchmarkError, BenchmarkFormat, BenchmarkSpec, Sample,
                                 count_images, find_image, resolve_path)

PET_SPECIES = {"1": "cat", "2": "dog"}


def pet_breed(image_name: str) -> str:
    """``"american_bulldog_12"`` -> ``"american bulldog"``; ``"Abyssinian_100"`` -> ``"abyssinian"``."""
    return image_name.rsplit("_", 1)[0].replace("_", " ").lower()


@BENCHMARK_FORMATS.register("oxford-pet")
class OxfordPet(BenchmarkFormat):
    def load(self, spec: BenchmarkSpec, root: Path) -> Benchmark:
        data_dir = resolve_path(root, spec.data_dir)
        files = {"list": "annotations/list.txt", **spec.files}
        listing = data_dir / files["list"]
        if not listing.is_file():
            raise BenchmarkError(f"benchmark {spec.name!r}: annotation list {listing} not found "
                                 "(Oxford-IIIT Pet: annotations.tar.gz unpacked into data_dir)")
        images = resolve_path(root, spec.images) if spec.images else data_dir / "images"
        samples, bad = [], []
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 4 or parts[2] not in PET_SPECIES:
                bad.append(f"line {n}")
                continue
            name = parts[0]
            samples.append(Sample(name, find_image(images, spec.image_patterns, name), [],
                                  labels={"coarse": PET_SPECIES[parts[2]], "fine": pet_breed(name),
                                          "class_id": parts[1]}))
        bench = Benchmark(spec, samples, problems={"bad_annotation_lines": bad})
        bench.counts["bad_annotation_lines"] = len(bad)
        return count_images(bench)

    def classifier(self, bench: Benchmark, judge: Callable[[], Any]):
        lm = judge()
        if not lm.offline:
            return LMClassifier(lm, sorted({s.labels["coarse"] for s in bench.samples}),
                                sorted({s.labels["fine"] for s in bench.samples}))
        return RuleClassifier("offline rule: species/breed names",
                              lambda caption, s: pet_rule_classifier(caption, s.labels["coarse"], s.labels["fine"]))
