"""Dataset adapters: a dataset's release format -> a corpus manifest (``cim manifest``).

Every adapter reads the annotation file, finds each record's image under the given images folder and writes
``{"id", "image", "text", "source", ...}`` rows with :func:`cim.data.manifest.write_manifest`. Images that
are not there are never dropped silently: they are counted and listed in the returned report and in
``<out>.missing.txt``, and with ``on_missing="fail"`` (``manifest.on_missing``) the conversion stops (no manifest written).

Accepted shapes (one record each; keys tried in the order given):

``refinedcaps`` (SC-Captioner's RefinedCaps over COCO train2017): a JSON list of records, or JSONL.
  image: ``image`` | ``image_id`` | ``file_name`` | ``images`` (LLaMA-Factory: a list, first item used).
  An integer or all-digit id names COCO's ``{id:012d}.jpg``; a path is looked up as given under the
  images folder, then by its file name alone (release files carry the authors' absolute paths).
  caption: ``caption`` | ``refined_caption`` | ``conversations`` (LLaVA: ``[{"from": "human", ...},
  {"from": "gpt", "value": caption}]``, the last gpt turn) | ``messages`` (LLaMA-Factory:
  ``[{"role": "user", ...}, {"role": "assistant", "content": caption}]``, the last assistant turn).
  ``<image>`` tokens are removed. id: ``id`` if present, else the image file's stem.
``densefusion`` (DenseFusion-1M / -4V-100K over LAION): CSV with a header, JSONL, or a JSON list.
  id: ``image_id`` | ``id`` (else the image stem); image: ``image_path`` | ``image`` | else
  ``<image_id>.jpg``; caption: ``caption`` | ``conversations`` | ``messages`` as above.
``docci`` (``docci_descriptions.jsonlines``): JSONL with ``example_id``, ``split``, ``image_file``,
  ``description``; images under the folder given (or its ``images/`` subfolder). ``split`` keeps only
  that split (train, test, qual_dev, qual_test); the row keeps ``split``.
``sc-captioner-sft`` (SC-Captioner's ``train_coco6k_sft.json``, the released training set): a JSON list of
  LLaMA-Factory / ShareGPT records, ``images`` (a list, first item) or ``image``, and ``messages``
  (role/content) or ``conversations`` (from/value). Corpus text: the last model turn; ``prompt``: the first
  user turn without its ``<image>`` token. With ``train_out`` the records also become the training manifest
  (``id, image, prompt, split``; it doubles as the index's sources file).
``coco-ln`` (Localized Narratives, COCO): JSONL with ``dataset_id``, ``image_id``, ``annotator_id``,
  ``caption``; image ``{image_id:012d}.jpg`` in the folder given. One row per narrative, id
  ``<image_id>_<annotator_id>``.

Duplicate ids (one image captioned twice) get ``_2``, ``_3``... appended. A record without a usable image
key or caption raises InputError (a ValueError) naming the file and record.

The readers are registered by name in :data:`cim.plugins.DATASET_FORMATS` (a reader is
``read(annotations: Path, split: str | None) -> Iterator[Record]``): another release format is one
registered function.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from cim.errors import CimError, InputError, describe_decode_error
from cim.io import atomic_write_text, read_jsonl
from cim.plugins import DATASET_FORMATS

from .manifest import write_image_rows, write_manifest

__all__ = ["AdapterReport", "MissingImagesError", "convert"]
log = logging.getLogger(__name__)
MAX_SHOWN = 20


class MissingImagesError(CimError, FileNotFoundError):
    """Images named by the annotations are not in the images folder (with ``on_missing="fail"``)."""


@dataclass
class AdapterReport:
    format: str
    annotations: str
    out: str
    records: int = 0                       # annotation records read (after the split filter)
    written: int = 0                       # manifest rows written
    missing_images: list[str] = field(default_factory=list)   # every image not found, as expected there
    empty_captions: list[str] = field(default_factory=list)   # ids of records with a blank caption
    missing_list: str | None = None        # file listing every missing image, when there are any
    train_out: str | None = None           # the training manifest, when one was asked for
    train_rows: int = 0

    def summary(self) -> str:
        text = f"{self.format}: {self.records} records -> {self.written} rows in {self.out}"
        if self.missing_images:
            shown = ", ".join(self.missing_images[:MAX_SHOWN])
            more = f" (+{len(self.missing_images) - MAX_SHOWN} more)" if len(self.missing_images) > MAX_SHOWN else ""
            text += f"; {len(self.missing_images)} images missing, skipped: {shown}{more}"
            if self.missing_list:
                text += f"; full list in {self.missing_list}"
        if self.empty_captions:
            text += f"; {len(self.empty_captions)} blank captions skipped"
        if self.train_out:
            text += f"; training manifest {self.train_out}: {self.train_rows} rows"
        return text


@dataclass
class Record:
    id: str
    images: list[str]   # where the image may be (relative to the images folder, or absolute); first = reported
    text: str
    extra: dict = field(default_factory=dict)


# format name (``cim manifest --format``) -> reader(annotations path, split=None) -> Records


# ---------------------------------------------------------------- reading release files

def _records(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) from a JSON list, JSONL / .jsonlines, or CSV with a header."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            try:
                for lineno, row in enumerate(csv.DictReader(handle), start=2):
                    yield f"{path}:{lineno}", row
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: {describe_decode_error(exc)}") from None
        return
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):
        with path.open(encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: malformed JSON ({exc.msg}, line {exc.lineno})") from None
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: {describe_decode_error(exc)}") from None
        for index, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise InputError(f"{path}: record {index} is not a JSON object")
            yield f"{path}: record {index}", obj
        return
    for lineno, obj in read_jsonl(path):
        yield f"{path}:{lineno}", obj


def _first(obj: dict, keys: Iterable[str]):
    for key in keys:
        if obj.get(key) not in (None, "", []):
            return obj[key]
    return None


def _dialogue_answer(turns) -> str | None:
    """The last model turn of a LLaVA (from/value) or LLaMA-Factory (role/content) conversation."""
    if not isinstance(turns, list):
        return None
    answers = [t.get("value", t.get("content")) for t in turns if isinstance(t, dict)
               and (t.get("from") in ("gpt", "assistant") or t.get("role") == "assistant")]
    return answers[-1] if answers else None


def _first_user_turn(turns) -> str | None:
    """The first user turn of a LLaVA (from/value) or LLaMA-Factory (role/content) conversation."""
    if not isinstance(turns, list):
        return None
    asks = [t.get("value", t.get("content")) for t in turns if isinstance(t, dict)
            and (t.get("from") in ("human", "user") or t.get("role") == "user")]
    return asks[0] if asks and isinstance(asks[0], str) else None


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("<image>", "")).strip()


def _caption(obj: dict, keys: tuple[str, ...], where: str) -> str:
    value = _first(obj, keys)
    if value is None:
        value = _dialogue_answer(obj.get("conversations")) or _dialogue_answer(obj.get("messages"))
    if value is None or not isinstance(value, str):
        raise InputError(f"{where}: no caption (expected one of {', '.join(keys)}, conversations, messages)")
    return _clean(value)


def _coco_name(value) -> str:
    return f"{int(value):012d}.jpg"


def _image_candidates(value) -> list[str]:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return [_coco_name(value)]
    value = str(value)
    name = value.replace("\\", "/").rsplit("/", 1)[-1]
    return [name] if name == value else [name, value]


@DATASET_FORMATS.register("refinedcaps")
def read_refinedcaps(path: Path, split: str | None = None) -> Iterator[Record]:
    for where, obj in _records(path):
        value = _first(obj, ("image", "image_id", "file_name", "images"))
        if value is None:
            raise InputError(f"{where}: no image (expected one of image, image_id, file_name, images)")
        images = _image_candidates(value)
        text = _caption(obj, ("caption", "refined_caption"), where)
        yield Record(str(obj.get("id") or Path(images[0]).stem), images, text)


@DATASET_FORMATS.register("sc-captioner-sft")
def read_sc_captioner_sft(path: Path, split: str | None = None) -> Iterator[Record]:
    for where, obj in _records(path):
        value = _first(obj, ("images", "image"))
        if value is None:
            raise InputError(f"{where}: no image (expected images or image)")
        turns = obj.get("messages") or obj.get("conversations")
        prompt = _first_user_turn(turns)
        if prompt is None or not _clean(prompt):
            raise InputError(f"{where}: no user turn (expected messages or conversations with a user prompt)")
        images = _image_candidates(value)
        yield Record(str(obj.get("id") or Path(images[0]).stem), images, _caption(obj, (), where),
                     {"prompt": _clean(prompt)})


@DATASET_FORMATS.register("densefusion")
def read_densefusion(path: Path, split: str | None = None) -> Iterator[Record]:
    for where, obj in _records(path):
        image_id = _first(obj, ("image_id", "id"))
        value = _first(obj, ("image_path", "image"))
        if value is None and image_id is None:
            raise InputError(f"{where}: no image (expected image_path, image or image_id)")
        images = _image_candidates(value) if value is not None else [f"{image_id}.jpg"]
        text = _caption(obj, ("caption",), where)
        yield Record(str(image_id if image_id is not None else Path(images[0]).stem), images, text)


@DATASET_FORMATS.register("docci")
def read_docci(path: Path, split: str | None = None) -> Iterator[Record]:
    for where, obj in _records(path):
        missing = [k for k in ("example_id", "image_file", "description") if k not in obj]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
        if split is not None and obj.get("split") != split:
            continue
        name = obj["image_file"]
        yield Record(str(obj["example_id"]), [name, f"images/{name}"], str(obj["description"]).strip(),
                     {"split": obj.get("split")})


@DATASET_FORMATS.register("coco-ln")
def read_coco_ln(path: Path, split: str | None = None) -> Iterator[Record]:
    for where, obj in _records(path):
        missing = [k for k in ("image_id", "annotator_id", "caption") if k not in obj]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
        yield Record(f"{obj['image_id']}_{obj['annotator_id']}", [_coco_name(obj["image_id"])],
                     str(obj["caption"]).strip(),
                     {"dataset_id": obj.get("dataset_id"), "annotator_id": obj["annotator_id"]})




# ---------------------------------------------------------------- conversion

def _find(candidates: list[str], images: Path) -> str | None:
    for cand in candidates:
        path = cand if os.path.isabs(cand) else os.path.join(images, cand)
        if os.path.isfile(path):
            return os.path.abspath(path)
    return None


def convert(fmt: str, annotations: str | Path, images: str | Path, out: str | Path,
            on_missing: str | None = None, split: str | None = None, train_out: str | Path | None = None) -> AdapterReport:
    """Write the corpus manifest ``out`` from a release's annotation file and images folder.

    ``on_missing`` (None: ``manifest.on_missing``'s default): ``skip`` (warn, list them in the report and
    ``<out>.missing.txt``) or ``fail`` (raise :class:`MissingImagesError`, write nothing). ``split`` filters DOCCI records. ``train_out``:
    also write the training manifest (``id, image, prompt, split: train``) of the records that carry a
    prompt (``sc-captioner-sft``), row for row with the corpus manifest.
    """
    from cim.config import choices
    from cim.config.schema import ManifestConfig

    read = DATASET_FORMATS.get(fmt)
    on_missing = ManifestConfig().on_missing if on_missing is None else on_missing
    if on_missing not in choices("manifest.on_missing"):
        raise ValueError(f"on_missing must be {' or '.join(choices('manifest.on_missing'))}, got {on_missing!r}")
    annotations, images, out = Path(annotations), Path(images), Path(out)
    if not annotations.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotations}")
    if not images.is_dir():
        raise FileNotFoundError(f"images folder not found: {images}")
    report = AdapterReport(fmt, str(annotations), str(out))
    counts: dict[str, int] = {}
    train_rows: list[dict] = []

    def rows() -> Iterator[dict]:   # streamed into the manifest: a 1M-row release is not held in memory
        for rec in read(annotations, split=split):
            report.records += 1
            if not rec.text:
                report.empty_captions.append(rec.id)
                continue
            found = _find(rec.images, images)
            if found is None:
                report.missing_images.append(str(images / rec.images[0]))
                continue
            counts[rec.id] = counts.get(rec.id, 0) + 1
            row_id = rec.id if counts[rec.id] == 1 else f"{rec.id}_{counts[rec.id]}"
            if rec.extra.get("prompt"):
                train_rows.append({"id": row_id, "image": found, "prompt": rec.extra["prompt"], "split": "train"})
            yield {"id": row_id, "image": found, "text": rec.text, "source": fmt,
                   **{k: v for k, v in rec.extra.items() if v is not None and k != "prompt"}}
        if report.missing_images and on_missing == "fail":   # raised inside the atomic write: nothing written
            raise MissingImagesError(f"{len(report.missing_images)} of {report.records} images named in "
                                     f"{annotations} are not under {images}; first: "
                                     + ", ".join(report.missing_images[:MAX_SHOWN]))

    report.written = write_manifest(rows(), out)
    if train_out is not None:
        if not train_rows:
            raise InputError(f"{fmt}: no record of {annotations} carries a prompt, so there is no training manifest")
        report.train_out, report.train_rows = str(train_out), write_image_rows(train_rows, train_out)
    missing_path = out.with_name(out.name + ".missing.txt")
    if report.missing_images:
        atomic_write_text(missing_path, "".join(p + "\n" for p in report.missing_images))
        report.missing_list = str(missing_path)
        log.warning(report.summary())
    else:
        missing_path.unlink(missing_ok=True)
    return report
