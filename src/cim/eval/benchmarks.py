"""Benchmarks as data: a YAML file declares the annotation files, the images folder, the prompt and the
metrics; a loader per *format* turns them into samples.

```yaml
# configs/benchmarks/cocoln500.yaml
name: cocoln500
format: sc-captioner                 # sc-captioner | oxford-pet | demo-world
data_dir: data/benchmarks/sc-captioner
files: {references: test_cocoln_500_gt.json, gpt_objects: cocoln500_gpt_objects.jsonl, ...}
images: data/benchmarks/coco2017     # supplied by the user (images are not redistributed)
image_patterns: ["{id}.jpg", "val2017/{id}.jpg", "train2017/{id}.jpg"]
prompt: Describe this image in detail.
metrics: [capture, fine_grained, relations_qa, bleu_meteor, cim]
```

Relative paths resolve against ``root`` (the project folder, where ``params.yaml`` lives). A missing
annotation file is an error naming it; a missing image is not: it is counted (``counts["missing_images"]``,
the first ids in ``missing_image_ids``) and the sample stays, with ``image=None``, so captions from a file
can still be scored.

Formats:

- ``sc-captioner`` (COCO-LN500, DOCCI500 as published by SC-Captioner): ``references`` ``{id: caption}``,
  ``gpt_objects`` jsonl of ``{id: [object, ...]}``, ``gpt_attributes`` ``{id: {object: [attribute, ...]}}``,
  ``questions`` ``{id: {question: answer}}``. Ids in an auxiliary file but not in the references are counted
  (``ids_not_in_references``).
- ``oxford-pet`` (Oxford-IIIT Pet release): ``images/<name>.jpg`` and ``annotations/list.txt``
  (``Image CLASS-ID SPECIES BREED-ID``; species 1 = cat, 2 = dog; the breed is the image name without its
  trailing number). Labels: ``coarse`` = species, ``fine`` = breed.
- ``demo-world`` (the generated world, :mod:`cim.data.world`): ``bench.jsonl`` (id, image, scene_graph,
  reference, coarse_label, fine_label) and ``bench_captions.jsonl`` (image_id, caption, level, quality).
  Yes/no relation questions are derived from the ground-truth scene graphs (each stated relation asked as
  is -> "Yes", and with the opposite relation -> "No").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

FORMATS = ("sc-captioner", "oxford-pet", "demo-world")
METRICS = ("capture", "fine_grained", "relations_qa", "bleu_meteor", "cim", "verification", "parser_recall")
MAX_LISTED = 20   # ids listed per problem kind (all are counted)


class BenchmarkError(ValueError):
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

    def references(self) -> dict[str, list[str]]:
        return {s.id: s.references for s in self.samples}

    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}

    def report(self) -> dict:
        return {"benchmark": self.name, "format": self.spec.format, "counts": dict(self.counts),
                "problems": {k: v[:MAX_LISTED] for k, v in self.problems.items() if v}}


# ------------------------------------------------------------------------------------------------ specs
def benchmark_dir(root: Path | str = ".") -> Path:
    return Path(root) / "configs" / "benchmarks"


def load_spec(name_or_path: str | Path, root: Path | str = ".", **overrides: Any) -> BenchmarkSpec:
    """A spec from ``configs/benchmarks/<name>.yaml`` (or a YAML path); ``overrides`` replace top-level keys
    (``data_dir=..., images=...``)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = benchmark_dir(root) / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in benchmark_dir(root).glob("*.yaml"))
        raise BenchmarkError(f"no benchmark {str(name_or_path)!r} (looked for {path}); known: {', '.join(known) or 'none'}")
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
    if data["format"] not in FORMATS:
        raise BenchmarkError(f"benchmark format {data['format']!r}{where} is not one of {', '.join(FORMATS)}")
    bad = [m for m in data.get("metrics", []) if m not in METRICS]
    if bad:
        raise BenchmarkError(f"unknown metrics{where}: {', '.join(bad)} (known: {', '.join(METRICS)})")
    patterns = data.get("image_patterns", ["{id}.jpg"])
    spec = BenchmarkSpec(**{**data, "image_patterns": [patterns] if isinstance(patterns, str) else list(patterns)},
                         source=source)
    spec.files = {str(k): str(v) for k, v in (spec.files or {}).items()}
    return spec


# ---------------------------------------------------------------------------------------------- helpers
def _resolve(root: Path, value: str | Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def _required(spec: BenchmarkSpec, data_dir: Path, role: str) -> Path:
    if role not in spec.files:
        raise BenchmarkError(f"benchmark {spec.name!r} declares no {role!r} file")
    path = data_dir / spec.files[role]
    if not path.is_file():
        raise BenchmarkError(f"benchmark {spec.name!r}: {role} file {path} not found")
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path} is not valid JSON: {exc}") from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{n} is not valid JSON: {exc}") from None
    return rows


def _find_image(images: Optional[Path], patterns: list[str], sample_id: str) -> Optional[Path]:
    if images is None:
        return None
    for pattern in patterns:
        path = images / pattern.format(id=sample_id)
        if path.is_file():
            return path
    return None


def _count_images(bench: Benchmark) -> Benchmark:
    missing = [s.id for s in bench.samples if s.image is None]
    bench.counts["samples"] = len(bench.samples)
    bench.counts["missing_images"] = len(missing)
    bench.problems["missing_images"] = missing
    return bench


# ---------------------------------------------------------------------------------------------- loaders
def _load_sc_captioner(spec: BenchmarkSpec, root: Path) -> Benchmark:
    data_dir = _resolve(root, spec.data_dir)
    images = _resolve(root, spec.images) if spec.images else None
    refs = _read_json(_required(spec, data_dir, "references"))
    if not isinstance(refs, dict):
        raise BenchmarkError(f"{spec.name}: references must be a JSON object {{id: caption}}")
    samples = []
    empty = []
    for sid in sorted(refs):
        text = refs[sid]
        texts = [text] if isinstance(text, str) else list(text)
        if not any(t and t.strip() for t in texts):
            empty.append(sid)
        samples.append(Sample(sid, _find_image(images, spec.image_patterns, sid), texts))
    bench = Benchmark(spec, samples, problems={"empty_references": empty})
    bench.counts["empty_references"] = len(empty)
    ids = set(refs)
    stray: list[str] = []
    if "gpt_objects" in spec.files:
        for row in _read_jsonl(_required(spec, data_dir, "gpt_objects")):
            for sid, objs in row.items():
                bench.gpt_objects[str(sid)] = [str(o) for o in objs]
    if "gpt_attributes" in spec.files:
        bench.gpt_attributes = {str(k): {str(o): [str(a) for a in v] for o, v in d.items()}
                                for k, d in _read_json(_required(spec, data_dir, "gpt_attributes")).items()}
    if "questions" in spec.files:
        bench.questions = {str(k): {str(q): str(a) for q, a in d.items()}
                           for k, d in _read_json(_required(spec, data_dir, "questions")).items()}
    for table in (bench.gpt_objects, bench.gpt_attributes, bench.questions):
        stray.extend(k for k in table if k not in ids)
    bench.problems["ids_not_in_references"] = sorted(set(stray))
    bench.counts["ids_not_in_references"] = len(set(stray))
    bench.counts["questions"] = sum(len(q) for k, q in bench.questions.items() if k in ids)
    return _count_images(bench)


PET_SPECIES = {"1": "cat", "2": "dog"}


def pet_breed(image_name: str) -> str:
    """``"american_bulldog_12"`` -> ``"american bulldog"``; ``"Abyssinian_100"`` -> ``"abyssinian"``."""
    return image_name.rsplit("_", 1)[0].replace("_", " ").lower()


def _load_oxford_pet(spec: BenchmarkSpec, root: Path) -> Benchmark:
    data_dir = _resolve(root, spec.data_dir)
    files = {"list": "annotations/list.txt", **spec.files}
    listing = data_dir / files["list"]
    if not listing.is_file():
        raise BenchmarkError(f"benchmark {spec.name!r}: annotation list {listing} not found "
                             "(Oxford-IIIT Pet: annotations.tar.gz unpacked into data_dir)")
    images = _resolve(root, spec.images) if spec.images else data_dir / "images"
    samples, bad = [], []
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 4 or parts[2] not in PET_SPECIES:
            bad.append(f"line {n}")
            continue
        name = parts[0]
        samples.append(Sample(name, _find_image(images, spec.image_patterns, name), [],
                              labels={"coarse": PET_SPECIES[parts[2]], "fine": pet_breed(name),
                                      "class_id": parts[1]}))
    bench = Benchmark(spec, samples, problems={"bad_annotation_lines": bad})
    bench.counts["bad_annotation_lines"] = len(bad)
    return _count_images(bench)


_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_SAY = {"left of": "to the left of", "right of": "to the right of"}


def world_questions(scene: dict) -> dict[str, str]:
    """Yes/no relation questions from a demo-world scene graph: each relation as stated ("Yes") and with
    the opposite relation ("No"; ``next to`` has no opposite and gets no negative)."""
    objs = scene.get("objects", [])

    def name(o: dict) -> str:
        return " ".join(["the", o.get("colour", ""), o.get("shape", "object")]).replace("  ", " ")

    out: dict[str, str] = {}
    for rel in scene.get("relations", []):
        s, o, r = objs[rel["subject"]], objs[rel["object"]], rel["relation"]
        out[f"Is {name(s)} {_SAY.get(r, r)} {name(o)}?"] = "Yes"
        if r in _OPPOSITE:
            out[f"Is {name(s)} {_SAY.get(_OPPOSITE[r], _OPPOSITE[r])} {name(o)}?"] = "No"
    return out


def _load_demo_world(spec: BenchmarkSpec, root: Path) -> Benchmark:
    data_dir = _resolve(root, spec.data_dir)
    files = {"bench": "bench.jsonl", "captions": "bench_captions.jsonl", **spec.files}
    bench_file = data_dir / files["bench"]
    if not bench_file.is_file():
        raise BenchmarkError(f"benchmark {spec.name!r}: {bench_file} not found; generate the world first "
                             "(`cim prepare`)")
    images = _resolve(root, spec.images) if spec.images else data_dir
    samples = []
    for row in _read_jsonl(bench_file):
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
        bench.captions = _read_jsonl(cap_file)
        stray = sorted({str(r.get("image_id")) for r in bench.captions} - ids)
        bench.problems["caption_ids_not_in_bench"] = stray
        bench.counts["caption_ids_not_in_bench"] = len(stray)
    bench.counts["questions"] = sum(len(q) for q in bench.questions.values())
    return _count_images(bench)


LOADERS: dict[str, Callable[[BenchmarkSpec, Path], Benchmark]] = {
    "sc-captioner": _load_sc_captioner,
    "oxford-pet": _load_oxford_pet,
    "demo-world": _load_demo_world,
}


def load_benchmark(spec: BenchmarkSpec | str | Path, root: Path | str = ".", **overrides: Any) -> Benchmark:
    """Load a benchmark from a spec (or its name / YAML path, with top-level ``overrides``)."""
    if not isinstance(spec, BenchmarkSpec):
        spec = load_spec(spec, root, **overrides)
    return LOADERS[spec.format](spec, Path(root))
