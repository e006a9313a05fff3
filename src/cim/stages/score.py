"""The ``score`` step: captions in (jsonl: ``caption`` + ``image_id`` or ``image``), rewards out.

One output row per input line, in order: the input row plus ``line`` and the result's keys
(:data:`cim.reward.schema.RESULT_KEYS`). A line that cannot be scored (blank, not UTF-8, not JSON, not an
object, or a bad item) gets a row with an ``error``, so outputs align with inputs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from cim.io import atomic_open
from cim.reward.schema import empty_result

__all__ = ["score_file", "read_items"]


def read_items(path: Path) -> Iterator[dict]:
    """Yield one dict per line; a line that is blank, not UTF-8, not JSON or not an object becomes an error
    item (``_error``). Every item carries its 1-based ``_line``."""
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
            item["_line"] = number
            yield item


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
    ``index.out_dir``); writes ``output`` atomically; returns ``{"output", "scored", "errors"}``."""
    from cim.config import check_names
    from cim.reward.scorer import Scorer, score_in_batches

    check_names(cfg, "encoders.text.name", "encoders.image.name")
    scorer = Scorer.from_config(cfg, index_dir=str(index_dir) if index_dir else None)
    out_path = Path(output)
    items = list(read_items(Path(input)))
    scored = iter(score_in_batches(scorer, [it for it in items if "_error" not in it], cfg.reward.batch_size,
                                   progress=progress))
    counts = {"scored": 0, "errors": 0}
    with atomic_open(out_path) as fh:
        for item in items:
            result = empty_result(item["_error"]) if "_error" in item else next(scored)
            row = {k: v for k, v in item.items() if not k.startswith("_")}
            row.update(line=item["_line"], **result)
            counts["errors" if row["error"] else "scored"] += 1
            fh.write(_json_line(row))
    return {"output": str(out_path), **counts}
