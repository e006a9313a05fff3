"""`cim score --index DIR --input FILE --output FILE`: jsonl in (caption + image_id or image), jsonl out."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from cim.config import load_config
from cim.io import atomic_open


def add_arguments(parser) -> None:
    parser.add_argument("--index", help="index directory (default: index.out_dir from params)")
    parser.add_argument("--input", required=True, help="jsonl: one {caption, image_id | image} per line")
    parser.add_argument("--output", required=True, help="jsonl written atomically: the input row plus "
                        "score, grc, qir, retrieved, source_rank, truncated, error")


def read_items(path: Path):
    """Yield one dict per non-blank line; a line that is not JSON or not UTF-8 becomes an error item."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield {"_line": number, "_error": f"line {number} is not valid UTF-8 ({exc.reason})"}
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                yield {"_line": number, "_error": f"line {number} is not JSON: {exc.msg}"}
                continue
            if not isinstance(item, dict):
                yield {"_line": number, "_error": f"line {number} is not a JSON object"}
                continue
            item["_line"] = number
            yield item


def run(args) -> int:
    cfg = load_config(args.params, args.overrides)
    from cim.reward.scorer import Scorer, _empty_result

    scorer = Scorer.from_config(cfg, index_dir=args.index)
    out_path = Path(args.output)
    counts = {"scored": 0, "errors": 0}
    batch: list[dict] = []

    def flush(fh) -> None:
        good = [it for it in batch if "_error" not in it]
        scored = iter(scorer.score(good))
        for item in batch:
            result = _empty_result(item["_error"]) if "_error" in item else next(scored)
            row = {k: v for k, v in item.items() if not k.startswith("_")}
            row.update(line=item["_line"], **result)
            counts["errors" if row["error"] else "scored"] += 1
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        batch.clear()

    with atomic_open(out_path) as fh, tqdm(desc="scoring", unit="caption") as bar:
        for item in read_items(Path(args.input)):
            batch.append(item)
            if len(batch) >= cfg.reward.batch_size:
                bar.update(len(batch))
                flush(fh)
        bar.update(len(batch))
        flush(fh)
    print(json.dumps({"output": str(out_path), **counts}), file=sys.stderr)
    return 0
