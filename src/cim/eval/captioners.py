"""Captioners behind one interface: ``captioner.caption(images, prompt) -> list[str]``.

``images`` are :class:`ImageItem` (id + path), benchmark :class:`~cim.eval.benchmarks.Sample` objects,
``(id, path)`` pairs or bare paths (id = file stem). :func:`generate_captions` runs a captioner over a
benchmark and writes jsonl in the caption-file format (:mod:`cim.captions`), one row per image: ``image_id,
image, caption, prompt, captioner, decoding, error``.
A missing image or a failed generation is an ``error`` on its row (caption ``""``), counted, never a crash
of the whole run.

Implementations, registered by name in :data:`CAPTIONERS` (``eval.captioner.name``); each builder takes
the ``eval.captioner`` section:

- ``levels``: :class:`GradedCaptions` — not a model: the benchmark's own graded captions (the demo world's
  detailed-correct ... wrong), one table row per level.
- ``hf``: :class:`HFVLMCaptioner` — Hugging Face vision-language models through
  ``AutoModelForImageTextToText`` and the model's own chat template: Qwen2.5-VL, Qwen2-VL, LLaVA /
  LLaVA-NeXT and InternVL in its HF format (``OpenGVLab/InternVL3-8B-hf``); a hub name (local cache only)
  or a local folder; GPU when present.
- ``vllm``: :class:`VLLMCaptioner` — the same models through vLLM, when vLLM is installed.
- ``file``: :class:`FileCaptioner` — "captions from a file": any external model's output in the caption-file
  format (:mod:`cim.captions`: jsonl rows with ``image_id`` or ``image`` and ``caption``, or a JSON
  ``{image_id: caption}``), so it can be scored like the rest.
- the authors' released checkpoints by hub id (``kkk5/CIM-Qwen2.5-VL-7B``, ...): :mod:`cim.eval.released`.

``captioner.methods(bench, prompt, bench_dir)`` gives the evaluator its table rows: ``(method, {id:
caption}, provenance)``; a generating captioner writes ``<bench_dir>/<method>/captions.jsonl`` on the way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from cim.captions import match_images, read_captions
from cim.errors import WeightsNotFound
from cim.eval.results import method_dir
from cim.io import write_jsonl
from cim import plugins
from cim.registry import Registry


@dataclass(frozen=True)
class ImageItem:
    id: str
    path: Optional[Path]


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 512
    do_sample: bool = False          # greedy by default: deterministic evaluation
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    seed: int = 0


def as_items(images: Iterable[Any]) -> list[ImageItem]:
    out = []
    for x in images:
        if isinstance(x, ImageItem):
            out.append(x)
        elif hasattr(x, "id") and hasattr(x, "image"):              # a benchmark Sample
            out.append(ImageItem(str(x.id), Path(x.image) if x.image else None))
        elif isinstance(x, tuple) and len(x) == 2:
            out.append(ImageItem(str(x[0]), Path(x[1]) if x[1] else None))
        else:
            out.append(ImageItem(Path(x).stem, Path(x)))
    return out


NOT_IN_FILE = "image not in captions file"
Method = tuple[str, dict[str, str], dict]      # (table row name, {id: caption}, where the captions came from)


class Captioner:
    """Images + prompt -> captions. Subclasses implement ``name``, :meth:`caption` and :meth:`describe`."""

    name: str

    def caption(self, images: Sequence[Any], prompt: str) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def methods(self, bench, prompt: str, bench_dir: Path, method: str = "", batch_size: int = 8) -> list[Method]:
        """One table row: every sample captioned now, written to ``<bench_dir>/<method>/captions.jsonl``."""
        method = method or self.name
        out = method_dir(bench_dir, method) / "captions.jsonl"
        rows, counts = generate_captions(self, bench.samples, prompt, out, batch_size=max(1, batch_size))
        return [(method, {r["image_id"]: r["caption"] for r in rows if r["error"] is None},
                 {"source": self.name, "file": str(out), "prompt": prompt, "describe": self.describe(),
                  "counts": counts})]


# ------------------------------------------------------------------------------------------ graded levels
class GradedCaptions(Captioner):
    """``levels``: the captions a benchmark ships with a known quality level (the demo world's), one table
    row per level; nothing is generated."""

    name = "levels"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "graded", "decoding": None}

    def caption(self, images: Sequence[Any], prompt: str) -> list[str]:
        raise ValueError("graded captions come with the benchmark; they are not generated")

    def methods(self, bench, prompt: str, bench_dir: Path, method: str = "", batch_size: int = 8) -> list[Method]:
        if not bench.captions:
            raise ValueError(f"captioner=levels needs graded captions (the demo world); {bench.name} has none: "
                             "set eval.captioner.name=file|hf|vllm")
        rows: dict[str, dict[str, str]] = {}
        for r in bench.captions:
            rows.setdefault(str(r.get("level")), {})[str(r["image_id"])] = r.get("caption") or ""
        return [(level, caps, {"source": "world graded captions", "level": level, "n": len(caps)})
                for level, caps in sorted(rows.items())]


# ---------------------------------------------------------------------------------------------- from file
class FileCaptioner(Captioner):
    """Captions written by something else, in the caption-file format (:func:`cim.captions.read_captions`).
    An image absent from the file, or whose row failed, gets no caption (its row an ``error``): the evaluation
    counts it as not captioned; a file none of whose images is the benchmark's is an error."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.captions, self.failed = read_captions(self.path)
        self.missing: list[str] = []

    def align(self, bench) -> None:
        """Key the file's captions by the benchmark's image ids (a row's ``image`` path matched to a sample's);
        a file none of whose images is the benchmark's is an :class:`~cim.errors.InputError`."""
        images = {s.id: (str(s.image) if s.image else None) for s in bench.samples}
        keys = match_images(self.path, [*self.captions, *self.failed], images, f"benchmark {bench.name}")
        self.captions = {keys[k]: v for k, v in self.captions.items() if k in keys}
        self.failed = {keys[k]: v for k, v in self.failed.items() if k in keys}

    def methods(self, bench, prompt: str, bench_dir: Path, method: str = "", batch_size: int = 8) -> list[Method]:
        """The file's captions matched to the benchmark's images (by id, or by ``image`` path), then one row as
        for any captioner (written to ``<bench_dir>/<method>/captions.jsonl``; no progress bar: nothing runs)."""
        self.align(bench)
        method = method or self.name
        out = method_dir(bench_dir, method) / "captions.jsonl"
        rows, counts = generate_captions(self, bench.samples, prompt, out, batch_size=max(1, batch_size),
                                         progress=False)
        return [(method, {r["image_id"]: r["caption"] for r in rows if r["error"] is None},
                 {"source": self.name, "file": str(out), "prompt": prompt, "describe": self.describe(),
                  "counts": counts})]

    @property
    def name(self) -> str:
        return f"file:{self.path.name}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "file", "path": str(self.path), "decoding": None}

    def caption(self, images: Sequence[Any], prompt: str) -> list[str]:
        out = []
        for item in as_items(images):
            if item.id not in self.captions and item.id not in self.failed:
                self.missing.append(item.id)
            out.append(self.captions.get(item.id, ""))
        return out


# ----------------------------------------------------------------------------------------- transformers
def _open_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


class HFVLMCaptioner(Captioner):
    """A transformers vision-language model with its chat template (see the module docstring)."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 decoding: Decoding = Decoding(), processor_kwargs: Optional[dict] = None):
        self.model_name, self.device, self.dtype, self.batch_size = model, device, dtype, batch_size
        self.decoding = decoding
        self.processor_kwargs = processor_kwargs or {}
        self._model = self._proc = None

    @property
    def name(self) -> str:
        return f"hf:{self.model_name}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "hf-vlm", "model": self.model_name, "dtype": self.dtype,
                "decoding": asdict(self.decoding), "processor_kwargs": self.processor_kwargs}

    def _load(self):
        if self._model is not None:
            return
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            proc = AutoProcessor.from_pretrained(self.model_name, local_files_only=True, **self.processor_kwargs)
            model = AutoModelForImageTextToText.from_pretrained(self.model_name, local_files_only=True,
                                                                dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise WeightsNotFound(
                f"captioner {self.model_name!r} is not on this machine (local files only): copy its hub cache "
                f"or pass a local folder; InternVL needs its -hf checkpoint (e.g. OpenGVLab/InternVL3-8B-hf); "
                f"to score an external model's output use the file captioner") from exc
        from cim.encoders.base import resolve_device

        device = resolve_device(self.device)
        tok = getattr(proc, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        self._proc, self._model, self._device = proc, model.to(device).eval(), device

    def _generate(self, images: list, prompt: str) -> list[str]:
        import torch

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self._proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self._proc(text=[text] * len(images), images=images, return_tensors="pt", padding=True)
        inputs = inputs.to(self._device)
        d = self.decoding
        kwargs = {"max_new_tokens": d.max_new_tokens, "do_sample": d.do_sample, "num_beams": d.num_beams}
        if d.do_sample:
            kwargs.update(temperature=d.temperature, top_p=d.top_p)
            torch.manual_seed(d.seed)
        with torch.no_grad():
            ids = self._model.generate(**inputs, **kwargs)
        new = ids[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self._proc.batch_decode(new, skip_special_tokens=True)]

    def caption(self, images: Sequence[Any], prompt: str) -> list[str]:
        self._load()
        items = as_items(images)
        out = [""] * len(items)
        todo = [(i, it) for i, it in enumerate(items) if it.path is not None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            texts = self._generate([_open_rgb(it.path) for _, it in chunk], prompt)
            for (i, _), t in zip(chunk, texts):
                out[i] = t
        return out


class VLLMCaptioner(Captioner):
    """The same models through vLLM (``pip install vllm``), multi-modal chat API, local weights only."""

    def __init__(self, model: str, decoding: Decoding = Decoding(), max_model_len: int = 8192, **llm_kwargs):
        self.model_name, self.decoding, self.max_model_len, self.llm_kwargs = model, decoding, max_model_len, llm_kwargs
        self._llm = None

    @property
    def name(self) -> str:
        return f"vllm:{self.model_name}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "vllm", "model": self.model_name, "decoding": asdict(self.decoding)}

    def caption(self, images: Sequence[Any], prompt: str) -> list[str]:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise WeightsNotFound("the vLLM captioner needs `pip install vllm`; use the hf captioner") from exc
        if self._llm is None:
            self._llm = LLM(model=self.model_name, max_model_len=self.max_model_len, **self.llm_kwargs)
        d = self.decoding
        params = SamplingParams(max_tokens=d.max_new_tokens, temperature=d.temperature if d.do_sample else 0.0,
                                top_p=d.top_p, seed=d.seed)
        items = as_items(images)
        todo = [(i, it) for i, it in enumerate(items) if it.path is not None]
        convs = [[{"role": "user", "content": [{"type": "image_pil", "image_pil": _open_rgb(it.path)},
                                               {"type": "text", "text": prompt}]}] for _, it in todo]
        out = [""] * len(items)
        for (i, _), res in zip(todo, self._llm.chat(convs, params) if convs else []):
            out[i] = res.outputs[0].text.strip()
        return out


# ----------------------------------------------------------------------------------------------- registry
# name -> builder(the eval.captioner section) -> Captioner
# (the released checkpoints register themselves by hub id: cim.eval.released)
CAPTIONERS: Registry = plugins.CAPTIONERS


def _model(c) -> str:
    if not c.model:
        raise ValueError(f"captioner {c.name!r} needs eval.captioner.model (a hub name or folder; for file, "
                         "the captions file)")
    return c.model


@CAPTIONERS.register("levels")
def _levels(c) -> Captioner:
    return GradedCaptions()


@CAPTIONERS.register("file")
def _file(c) -> Captioner:
    return FileCaptioner(_model(c))


@CAPTIONERS.register("hf")
def _hf(c) -> Captioner:
    return HFVLMCaptioner(_model(c), device=c.device, dtype=c.dtype, batch_size=c.batch_size,
                          decoding=Decoding(max_new_tokens=c.max_new_tokens))


@CAPTIONERS.register("vllm")
def _vllm(c) -> Captioner:
    return VLLMCaptioner(_model(c), decoding=Decoding(max_new_tokens=c.max_new_tokens))


def build_captioner(name: str, model: str | None = None, **options) -> Captioner:
    """A registered captioner by name; ``model`` and ``options`` are fields of the ``eval.captioner``
    section (``hf``/``vllm``: hub name or folder; ``file``: the captions file)."""
    from cim.config import EvalCaptionerConfig

    return CAPTIONERS.build(name, EvalCaptionerConfig(name=name, model=model or "", **options))


# ------------------------------------------------------------------------------------------------ running
def generate_captions(captioner: Captioner, images: Sequence[Any], prompt: str, out_path: str | Path | None = None,
                      batch_size: int = 32, progress: bool = True) -> tuple[list[dict], dict]:
    """Caption every image; returns (rows, counts) and writes the rows as jsonl when ``out_path`` is given.

    Missing images and failed batches become per-row errors; a failed batch is retried image by image so
    one bad file does not take its neighbours down. A progress bar (stderr) counts images."""
    import sys

    from tqdm.auto import tqdm

    items = as_items(images)
    bar = tqdm(total=len(items), desc=f"captioning ({captioner.name})", unit="image", file=sys.stderr,
               disable=not progress, mininterval=0.1 if sys.stderr.isatty() else 1.0)
    describe = captioner.describe()
    decoding = describe.get("decoding")
    needs_images = describe.get("kind") != "file"
    rows: list[dict] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        ready = [it for it in chunk if it.path is not None or not needs_images]
        errors: dict[str, str] = {it.id: "missing image" for it in chunk if it not in ready}
        texts: dict[str, str] = {}
        try:
            texts.update(zip((it.id for it in ready), captioner.caption(ready, prompt)))
        except WeightsNotFound:
            raise
        except Exception:
            for it in ready:
                try:
                    texts[it.id] = captioner.caption([it], prompt)[0]
                except WeightsNotFound:
                    raise
                except Exception as exc:  # noqa: BLE001  (recorded on the row)
                    errors[it.id] = f"{type(exc).__name__}: {exc}"
        for it in chunk:
            rows.append({"image_id": it.id, "image": str(it.path) if it.path else None,
                         "caption": texts.get(it.id, ""), "prompt": prompt, "captioner": captioner.name,
                         "decoding": decoding, "error": errors.get(it.id)})
        bar.update(len(chunk))
    bar.close()
    missing_ids = set(getattr(captioner, "missing", []))
    failed_ids = getattr(captioner, "failed", {})
    for row in rows:
        if row["image_id"] in missing_ids and row["error"] is None:
            row["error"] = NOT_IN_FILE
        elif row["image_id"] in failed_ids and row["error"] is None:
            row["error"] = f"failed in the captions file: {failed_ids[row['image_id']]}"
    counts = {"images": len(rows), "captioned": sum(1 for r in rows if r["error"] is None and r["caption"].strip()),
              "missing_images": sum(1 for r in rows if r["error"] == "missing image"),
              "not_in_file": sum(1 for r in rows if r["error"] == NOT_IN_FILE),
              "failed": sum(1 for r in rows if r["error"] and r["error"] not in ("missing image", NOT_IN_FILE)),
              "empty": sum(1 for r in rows if r["error"] is None and not r["caption"].strip())}
    if out_path is not None:
        write_jsonl(rows, out_path)
    return rows, counts
