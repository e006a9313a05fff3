"""The comparison's files: ``captioners.json`` (``{"benchmark", "baseline", "rows"}``), ``captioners.md``
(the main columns with deltas against the baseline, like the paper's Table 2) and ``captioners.png`` (a bar
chart of the main metrics per captioner). Nothing in them differs between two runs of the same inputs."""
from __future__ import annotations

from pathlib import Path

from cim.io import atomic_write, atomic_write_text
from cim.eval.results import write_json

# (key, header, shown x100)
MAIN = (("capture", "CAPTURE", True), ("object_f1", "Obj F1", True), ("attribute_f1", "Attr F1", True),
        ("relations_qa", "Rel QA", True), ("bleu4", "BLEU-4", True), ("meteor", "METEOR", True),
        ("cim", "CIM Υ", False), ("gt_object_recall", "GT obj R", True), ("gt_attribute_recall", "GT attr R", True),
        ("gt_attribute_precision", "GT attr P", True), ("gt_relation_recall", "GT rel R", True),
        ("caption_words", "words", False))
JSON_FILE, TABLE_FILE, PLOT_FILE = "captioners.json", "captioners.md", "captioners.png"


def markdown(table: dict) -> str:
    cols = [c for c in MAIN if any(c[0] in r for r in table["rows"])]
    out = [f"### {table['benchmark']} (deltas vs {table['baseline']})", "",
           "| Captioner | " + " | ".join(h for _, h, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in table["rows"]:
        cells = []
        for key, _, pct in cols:
            scale = 100.0 if pct else 1.0
            cell = f"{r[key] * scale:.2f}" if key in r else "–"
            if r["captioner"] != table["baseline"] and f"delta_{key}" in r:
                cell += f" ({r[f'delta_{key}'] * scale:+.2f})"
            cells.append(cell)
        mark = "○ " if r["captioner"] == table["baseline"] else "● "
        out.append(f"| {mark}{r['captioner']} | " + " | ".join(cells) + " |")
    out += ["", "- ○ baseline row; ● rows show (delta vs the baseline); percentages except CIM Υ and words",
            "- GT columns: recall against the benchmark's ground-truth scene graphs (no parser); the others "
            "are the parser/judge-based metrics of `cim evaluate`", ""]
    return "\n".join(out)


def plot(table: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [c for c in MAIN if c[2] and all(c[0] in r for r in table["rows"])]
    rows = table["rows"]
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(cols))
    for i, r in enumerate(rows):
        ax.bar(x + i * width - 0.4 + width / 2, [r[k] * 100 for k, _, _ in cols], width, label=r["captioner"])
    ax.set_xticks(x, [h for _, h, _ in cols])
    ax.set_ylabel("score (x100)")
    ax.set_title(f"captioners on {table['benchmark']} (baseline {table['baseline']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, metadata={"Software": None}))
    plt.close(fig)
    return path


def write_table(table: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / JSON_FILE, table)
    atomic_write_text(out_dir / TABLE_FILE, markdown(table))
    return [out_dir / JSON_FILE, out_dir / TABLE_FILE, plot(table, out_dir / PLOT_FILE)]
