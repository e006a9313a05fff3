"""The one caption-file format: what ``cim score``, ``cim audit``, ``cim evaluate`` and ``cim compare`` read and
``cim caption`` writes (docs/captions.md).

jsonl, one JSON object per line; each key means the same thing in every command:

- ``image_id``: the image, by id (an index source id for score/audit, a benchmark image id for
  evaluate/compare);
- ``image``: or the image by path (when it has no id; evaluate/compare match it to a benchmark image's path);
- ``caption``: the text;
- ``id`` (optional): the row's own label, echoed in outputs; never the image;
- ``error`` (optional): set when captioning failed: the row is a failed caption, not a caption.

Other keys are carried along. evaluate and compare also read a JSON object ``{image_id: caption}``.
Files written by ``cim caption`` before ``image_id`` existed (rows with ``id`` and ``captioner`` but no
``image_id``) still read: there ``id`` named the image.

:func:`read_lines` reads a file line by line (a bad line becomes an error item; ``cim score`` keeps going);
:func:`row_problem` says what a row lacks; :func:`read_captions` reads a whole file strictly (one line naming
the first bad row) into ``{image_id: caption}``; :func:`match_images` refuses a file whose images match
nothing it is scored against.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from cim.errors import InputError

__all__ = ["FORMAT", "read_lines", "row_problem", "image_of", "read_captions", "match_images"]

FORMAT = "jsonl rows {image_id | image, caption[, id][, error]} (docs/captions.md)"


def _legacy(obj: dict) -> dict:
    """A row written by ``cim caption`` before ``image_id``: its ``id`` is the image."""
    if "image_id" not in obj and "id" in obj and "captioner" in obj:
        obj = dict(obj)
        obj["image_id"] = obj.pop("id")
    return obj


def read_lines(path: str | Path) -> Iterator[dict]:
    """Yield one dict per line; a line that is blank, not UTF-8, not JSON or not an object becomes an error
    item (``_error``). Every item carries its 1-based ``_line``. An unreadable file raises at once (before
    the first item), so a caller that materialises the items fails before any model loads."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                yield {"_line": number, "_error": f"line {number} is blank"}
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield {"_line": number, "_error": f"line {number} is not valid UTF-8 ({exc.reason})"}
                continue
            try:
                item = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                yield {"_line": number, "_error": f"line {number} is not JSON: {msg}"}
                continue
            if not isinstance(item, dict):
                yield {"_line": number, "_error": f"line {number} is not a JSON object"}
                continue
            item = _legacy(item)
            item["_line"] = number
            yield item


def row_problem(row: Mapping) -> str | None:
    """What a row lacks, in words (``None`` when it is a caption row of the format)."""
    if "_error" in row:
        return str(row["_error"])
    if row.get("image_id") in (None, "") and row.get("image") in (None, ""):
        hint = " ('id' is only the row's label)" if "id" in row else ""
        return f"no 'image_id' (or 'image' path){hint}"
    if "caption" not in row:
        return "no 'caption'"
    return None


def image_of(row: Mapping) -> str:
    """The row's image key: its ``image_id``, else its ``image`` path."""
    return str(row["image_id"]) if row.get("image_id") not in (None, "") else str(row["image"])


def read_captions(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(captions, failed)`` of a caption file, keyed by image (``image_id``, else the ``image`` path): a row
    whose ``error`` is set is a failed caption (``failed[image] = error``). A JSON object
    ``{image_id: caption}`` is read too. A row that does not fit is an :class:`InputError` naming the file,
    the line and the key it lacks."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"captions file {path} not found")
    if path.read_bytes().lstrip()[:1] == b"{":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None          # jsonl: one object per line
        if isinstance(data, dict) and not {"caption", "image_id", "image"} & set(data):
            return {str(k): (v if isinstance(v, str) else v[0]) for k, v in data.items()}, {}
    captions: dict[str, str] = {}
    failed: dict[str, str] = {}
    for row in read_lines(path):
        if str(row.get("_error", "")).endswith("is blank"):
            continue
        problem = row_problem(row)
        if problem is not None:
            raise InputError(f"{path}:{row['_line']}: {problem}; expected {FORMAT}")
        key = image_of(row)
        if row.get("error"):
            failed[key] = str(row["error"])
        else:
            captions[key] = row["caption"] or ""
    return captions, failed


def match_images(path: str | Path, keys: Iterable[str], images: Mapping[str, str | None], what: str) -> dict[str, str]:
    """``{file key: image id}`` for the file's image keys (ids, or paths matched to ``images`` ``{id: path}``
    by resolved path or file name); an :class:`InputError` when none matches (showing a few of each), so a
    file never reads as "0 of N images captioned"."""
    keys = list(keys)
    by_path: dict[str, str] = {}
    for sid, p in images.items():
        if p:
            by_path.setdefault(str(Path(p).resolve()), sid)
            by_path.setdefault(Path(p).name, sid)
    out: dict[str, str] = {}
    for k in keys:
        sid = k if k in images else by_path.get(str(Path(k).resolve())) or by_path.get(Path(k).name)
        if sid is not None:
            out[k] = sid
    if keys and not out:
        few = ", ".join(repr(k) for k in keys[:3])
        ids = ", ".join(repr(i) for i in list(images)[:3])
        raise InputError(f"{path}: none of its {len(keys)} images ({few}{', ...' if len(keys) > 3 else ''}) is an "
                         f"image of {what} ({ids}, ...): rows name the image by 'image_id' or 'image' path "
                         "(docs/captions.md)")
    return out
