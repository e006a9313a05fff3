"""Benchmarks as data: a YAML file declares the annotation files, the images folder, the prompt and the
metrics; a registered *format* turns them into samples.

```yaml
# configs/benchmarks/cocoln500.yaml
name: cocoln500
format: sc-captioner                 # a registered format: sc-captioner | oxford-pet | demo-world
data_dir: data/benchmarks/sc-captioner
files: {references: test_cocoln_500_gt.json, gpt_objects: cocoln500_gpt_objects.jsonl, ...}
images: data/benchmarks/coco2017     # supplied by the user (images are not redistributed)
image_patterns: ["{id}.jpg", "val2017/{id}.jpg", "train2017/{id}.jpg"]
prompt: Describe this image in detail.
metrics: [capture, fine_grained, relations_qa, bleu_meteor, cim]    # registered metrics (cim.eval.metrics)
capture_encoder: all-mpnet-base-v2   # CAPTURE's soft-match SBERT (the default), whatever encoders.text is
```

Relative paths resolve against ``root`` (the project folder, where ``params.yaml`` lives). A missing
annotation file is an error naming it; a missing image is not: it is counted (``counts["missing_images"]``,
the ids in ``problems["missing_images"]``) and the sample stays, with ``image=None``, so captions from a
file can still be scored.

A format (a :class:`BenchmarkFormat` subclass registered in :data:`cim.plugins.BENCHMARK_FORMATS`) owns
everything that differs between releases: how to load one (:meth:`~BenchmarkFormat.load`), where the object / attribute reference lists of
the fine-grained metrics come from (:meth:`~BenchmarkFormat.reference_lists`), and which caption
classifier the verification experiment uses (:meth:`~BenchmarkFormat.classifier`). Built in, one module
each: ``sc-captioner`` (:mod:`.sc_captioner`), ``oxford-pet`` (:mod:`.oxford_pet`), ``demo-world``
(:mod:`.demo_world`).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

from cim.errors import InputError
from cim.io import named_yaml, read_jsonl
from cim.plugins import BENCHMARK_FORMATS, METRICS

__all__ = ["BenchmarkError", "BenchmarkSpec", "Sample", "Benchmark", "BenchmarkFormat", "load_spec", "spec_from_dict", "load_benchmark", "benchmark_dir",
           "resolve_path", "required_file", "read_json", "read_rows", "find_image", "count_images"]

MAX_LISTED = 20   # ids listed per problem kind (all are counted)


class BenchmarkError(InputError):
    """A benchmark declaration or annotation file that cannot be used."""


@dataclass
class BenchmarkSpec:
    name: str
    format: str
    data_dir: str
    files: dict[str, str] = field(default_factory=dict)
    images: Optional[str] = None
    image_patterns: list[str] = field(default_factory=lambda: ["{id}.jpg"])
    prompt: str = "Describe this image in detail."
    metrics: list[str] = field(default_factory=lambda: ["capture"])
    description: str = ""
    paper: dict = field(default_factory=dict)     # published numbers to compare with (optional)
    # CAPTURE's soft-match encoder (and the attribute metrics'): an SBERT model name, or encoders.text-style
    # fields {name, model, ...} for a registered encoder; CAPTURE's own by default; never the retrieval encoder
    capture_encoder: Any = "all-mpnet-base-v2"
    source: Optional[str] = None                  # the YAML file it came from

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Sample:
    id: str
    image: Optional[Path]
    references: list[str]
    labels: dict[str, str] = field(default_factory=dict)      # coarse / fine (verification)
    scene_graph: Optional[dict] = None                         # demo world ground truth


@dataclass
class Benchmark:
    spec: BenchmarkSpec
    samples: list[Sample]
    gpt_objects: dict[str, list[str]] = field(default_factory=dict)
    gpt_attributes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    questions: dict[str, dict[str, str]] = field(default_factory=dict)
    captions: list[dict] = field(default_factory=list)        # demo world: graded captions per image
    counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def format(self) -> "BenchmarkFormat":
        return BENCHMARK_FORMATS.get(self.spec.format)()

    def references(self) -> dict[str, list[str]]:
        return {s.id: s.references for s in self.samples}

    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}

    def reference_lists(self) -> tuple[dict[str, list[str]], dict[str, dict[str, list[str]]]]:
        """(objects, {object: attributes}) per sample id for the fine-grained metrics (from the format)."""
        return self.format.reference_lists(self)

    def limit(self, n: int) -> None:
        """Keep the first ``n`` samples (and their graded captions)."""
        keep = {s.id for s in self.samples[:n]}
        self.samples = [s for s in self.samples if s.id in keep]
        self.captions = [c for c in self.captions if str(c.get("image_id")) in keep]
        self.counts["samples"] = len(self.samples)
        self.counts["limited_to"] = n

    def report(self) -> dict:
        return {"benchmark": self.name, "format": self.spec.format, "counts": dict(self.counts),
                "problems": {k: v[:MAX_LISTED] for k, v in self.problems.items() if v}}


# ----------------------------------------------------------------------------------------------- formats
class BenchmarkFormat:
    """A benchmark release format. Subclass, implement :meth:`load`, register the class with
    ``@BENCHMARK_FORMATS.register("name")`` (docs/extending.md)."""

    reference_note: str = ""   # fine-grained protocol note when the reference lists are not GPT's

    def load(self, spec: BenchmarkSpec, root: Path) -> Benchmark:  # pragma: no cover - interface
        raise NotImplementedError

    def reference_lists(self, bench: Benchmark) -> tuple[dict, dict]:
        """The object and attribute lists SC-Captioner took from GPT (as loaded)."""
        return bench.gpt_objects, bench.gpt_attributes

    def classifier(self, bench: Benchmark, judge: Callable[[], Any]):
        """The verification experiment's caption classifier (:mod:`cim.eval.accuracy_correlation`), or None
        when the format has no coarse / fine labels. ``judge()`` builds the configured judge on demand."""
        return None


# ------------------------------------------------------------------------------------------------ specs
def benchmark_dir(root: Path | str = ".") -> Path:
    return Path(root) / "configs" / "benchmarks"


def load_spec(name_or_path: str | Path, root: Path | str = ".", **overrides: Any) -> BenchmarkSpec:
    """A spec from ``configs/benchmarks/<name>.yaml`` (or a YAML path); ``overrides`` replace top-level keys
    (``data_dir=..., images=...``)."""
    path = named_yaml(name_or_path, benchmark_dir(root), "benchmark", BenchmarkError)
    data = yaml.safe_load(path.read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return spec_from_dict(data, source=str(path))


def spec_from_dict(data: Mapping[str, Any], source: str | None = None) -> BenchmarkSpec:
    data = dict(data)
    source = data.pop("source", None) or source
    known = set(BenchmarkSpec.__dataclass_fields__) - {"source"}
    unknown = set(data) - known
    where = f" in {source}" if source else ""
    if unknown:
        raise BenchmarkError(f"unknown benchmark keys{where}: {', '.join(sorted(unknown))}")
    for key in ("name", "format", "data_dir"):
        if key not in data:
            raise BenchmarkError(f"benchmark{where} lacks {key!r}")
    if data["format"] not in BENCHMARK_FORMATS:
        raise BenchmarkError(f"benchmark format {data['format']!r}{where} is not one of "
                             f"{', '.join(BENCHMARK_FORMATS)}")
    bad = [m for m in data.get("metrics", []) if m not in METRICS]
    if bad:
        raise BenchmarkError(f"unknown metrics{where}: {', '.join(bad)} (known: {', '.join(METRICS)})")
    enc = data.get("capture_encoder", "all-mpnet-base-v2")
    enc_keys = {"name", "model", "batch_size", "max_seq_length", "device"}
    if not (isinstance(enc, str) and enc) and not (isinstance(enc, dict) and enc.get("model") and set(enc) <= enc_keys):
        raise BenchmarkError(f"capture_encoder{where} must be an SBERT model name or a mapping of "
                             f"{', '.join(sorted(enc_keys))} with a model, got {enc!r}")
    patterns = data.get("image_patterns", ["{id}.jpg"])
    spec = BenchmarkSpec(**{**data, "image_patterns": [patterns] if isinstance(patterns, str) else list(patterns)},
                         source=source)
    spec.files = {str(k): str(v) for k, v in (spec.files or {}).items()}
    return spec


# ------------------------------------------------------------------------------- helpers for the formats
def resolve_path(root: Path, value: str | Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def required_file(spec: BenchmarkSpec, data_dir: Path, role: str) -> Path:
    if role not in spec.files:
        raise BenchmarkError(f"benchmark {spec.name!r} declares no {role!r} file")
    path = data_dir / spec.files[role]
    if not path.is_file():
        raise BenchmarkError(f"benchmark {spec.name!r}: {role} file {path} not found")
    return path


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path} is not valid JSON: {exc}") from None


def read_rows(path: Path) -> list[dict]:
    """A jsonl annotation file's objects; a malformed line is a BenchmarkError naming file and line."""
    try:
        return [row for _, row in read_jsonl(path)]
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None


def find_image(images: Optional[Path], patterns: list[str], sample_id: str) -> Optional[Path]:
    if images is None:
        return None
    for pattern in patterns:
        path = images / pattern.format(id=sample_id)
        if path.is_file():
            return path
    return None


def count_images(bench: Benchmark) -> Benchmark:
    missing = [s.id for s in bench.samples if s.image is None]
    bench.counts["samples"] = len(bench.samples)
    bench.counts["missing_images"] = len(missing)
    bench.problems["missing_images"] = missing
    return bench


def load_benchmark(spec: BenchmarkSpec | str | Path, root: Path | str = ".", **overrides: Any) -> Benchmark:
    """Load a benchmark from a spec (or its name / YAML path, with top-level ``overrides``)."""
    if not isinstance(spec, BenchmarkSpec):
        spec = load_spec(spec, root, **overrides)
    return BENCHMARK_FORMATS.get(spec.format)().load(spec, Path(root))
