"""`cim score --index DIR --input FILE --output FILE`: jsonl in (caption + image_id or image), jsonl out.

One output row per input line, in order: the input row plus ``line`` and the result's keys
(:data:`cim.reward.schema.RESULT_KEYS`). A line that cannot be scored (blank, not UTF-8, not JSON, not an
object, or a bad item) gets a row with an ``error``, so outputs align with inputs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

from cim.config import load_config
from cim.io import atomic_open
from cim.reward.schema import RESULT_KEYS, empty_result


def add_arguments(parser) -> None:
    parser.add_argument("--index", help="index directory (default: index.out_dir from params)")
    parser.add_argument("--input", required=True, help="jsonl: one {caption, image_id | image} per line")
    parser.add_argument("--output", required=True, help="jsonl written atomically, one row per input line: the "
                        "input row plus line, " + ", ".join(RESULT_KEYS))


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


def run(args) -> int:
    cfg = load_config(args.params, args.overrides)
    from cim.reward.scorer import Scorer, score_in_batches

    scorer = Scorer.from_config(cfg, index_dir=args.index)
    out_path = Path(args.output)
    items = list(read_items(Path(args.input)))
    scored = iter(score_in_batches(scorer, [it for it in items if "_error" not in it], cfg.reward.batch_size,
                                   progress=True))
    counts = {"scored": 0, "errors": 0}
    with atomic_open(out_path) as fh:
        for item in items:
            result = empty_result(item["_error"]) if "_error" in item else next(scored)
            row = {k: v for k, v in item.items() if not k.startswith("_")}
            row.update(line=item["_line"], **result)
            counts["errors" if row["error"] else "scored"] += 1
            fh.write(_json_line(row))
    print(json.dumps({"output": str(out_path), **counts}), file=sys.stderr)
    return 0
