"""The ``score`` step: captions in (the caption-file format, :mod:`cim.captions`: ``caption`` + ``image_id`` or
``image``, optional ``id`` label), rewards out.

One output row per input line, in order: the input row plus ``line`` and the result's keys
(:data:`cim.reward.schema.RESULT_KEYS`). A line that cannot be scored (blank, not UTF-8, not JSON, not an
object, or a bad item) gets a row with an ``error``, so outputs align with inputs. The input is read, and a file
none of whose rows fits the format refused, before any model loads.
"""
from __future__ import annotations

import json
from pathlib import Path
from cim.captions import read_lines, row_problem
from cim.errors import InputError
from cim.io import atomic_open
from cim.reward.schema import empty_result

__all__ = ["score_file"]


def _json_line(row: dict) -> str:
    """The row as one JSON line; text that is not encodable (a lone surrogate echoed from the input) is
    written escaped, as the input had it."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row, ensure_ascii=True)
    return line + "\n"


def score_file(cfg, input: str | Path, output: str | Path, *, index_dir: str | Path | None = None,
               progress: bool = True) -> dict:
    """Score every line of ``input`` with the configured reward over the index ``index_dir`` (default
    ``index.out_dir``); writes ``output`` atomically; returns ``{"output", "scored", "errors"}`` plus
    ``first_error`` (``"line N: why"``) when a row failed, and ``meaning``: what the numbers mean
    (:func:`cim.eval.meaning.describe`). A file that cannot be read, or none of whose rows
    fits the format, is an :class:`InputError` before any model loads."""
    items = list(read_lines(Path(input)))               # an unreadable file fails here, before any model
    problems = [(it["_line"], row_problem(it)) for it in items]
    if not items or all(p for _, p in problems):
        first = f" (line {problems[0][0]}: {problems[0][1]})" if problems else " (it is empty)"
        raise InputError(f"{input}: no row to score{first}; expected rows "
                         "{image_id | image, caption[, id]} (docs/captions.md)")
    from cim.config import check_names
    from cim.reward.scorer import Scorer, score_in_batches

    check_names(cfg, "encoders.text.name", "encoders.image.name")
    scorer = Scorer.from_config(cfg, index_dir=str(index_dir) if index_dir else None)
    out_path = Path(output)
    scored = iter(score_in_batches(scorer, [it for it in items if "_error" not in it], cfg.reward.batch_size,
                                   progress=progress))
    counts = {"scored": 0, "errors": 0}
    first_error = None
    with atomic_open(out_path) as fh:
        for item in items:
            result = empty_result(item["_error"]) if "_error" in item else next(scored)
            row = {k: v for k, v in item.items() if not k.startswith("_")}
            row.update(line=item["_line"], **result)
            counts["errors" if row["error"] else "scored"] += 1
            if row["error"] and first_error is None:
                first_error = f"line {item['_line']}: {row['error']}"
            fh.write(_json_line(row))
    from cim.eval.meaning import describe

    return {"output": str(out_path), **counts, **({"first_error": first_error} if first_error else {}),
            "meaning": describe(cfg, scorer)}
