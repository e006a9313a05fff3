"""The repetition column (the `repetition` metric: the share of a caption's word trigrams that repeat an earlier
one, mean over captions; lower is better): its numbers per seed and row, its intervals and deltas, the table's
↓ mark, and that adding it leaves every other column's number as it was (hand-made captions, the real
compare stage)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REFS = {"a": "A red circle on the green grass.", "b": "A small blue square next to a tree.",
        "c": "A yellow star above a wooden fence.", "d": "Two brown dogs run on the sand."}
LOOPY = {"a": "A red circle on the grass, a red circle on the grass, a red circle on the grass.",
         "b": "A small blue square next to a tree next to a tree.", "c": "A yellow star above a wooden fence.",
         "d": "Two brown dogs run on the sand, two brown dogs run on the sand."}


def _bench(tmp_path: Path, metrics: str) -> Path:
    (tmp_path / "gt.json").write_text(json.dumps(REFS))
    spec = tmp_path / f"hand-{len(metrics)}.yaml"
    spec.write_text(f"name: hand\nformat: sc-captioner\ndata_dir: {tmp_path}\nfiles: {{references: gt.json}}\n"
                    f"metrics: [{metrics}]\ncapture_encoder: all-MiniLM-L6-v2\n")
    return spec


def _file(path: Path, captions: dict) -> Path:
    path.write_text("".join(json.dumps({"image_id": k, "caption": v}) + "\n" for k, v in captions.items()))
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from cim.config import load_config
    from cim.stages.compare import compare

    tmp = tmp_path_factory.mktemp("rep")
    half = {k: (LOOPY[k] if k in ("a", "b") else REFS[k]) for k in REFS}
    captions = {"ref": [_file(tmp / "ref.jsonl", REFS)],
                "loopy": [_file(tmp / "loopy0.jsonl", LOOPY), _file(tmp / "loopy1.jsonl", half)]}
    cfg = load_config(None, [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}"])
    out = {}
    for name, metrics in (("with", "caption_words, repetition"), ("without", "caption_words")):
        out[name] = compare(cfg, captions, str(_bench(tmp, metrics)), "ref", tmp / name, log=lambda *a: None,
                            n_boot=200)
    return out, tmp


def test_the_repetition_column_is_the_mean_repeated_trigram_rate_per_seed_and_row(tables):
    from cim.reward.text import repeated_ngram_rate

    (out, _) = tables
    rows = {r["captioner"]: r for r in out["with"]["rows"]}
    assert "repetition" in out["with"]["columns"]
    half = [LOOPY["a"], LOOPY["b"], REFS["c"], REFS["d"]]
    per_seed = [np.mean([repeated_ngram_rate(c, 3) for c in LOOPY.values()]),
                np.mean([repeated_ngram_rate(c, 3) for c in half])]
    assert rows["loopy"]["per_seed"]["repetition"] == pytest.approx(per_seed)
    assert rows["loopy"]["repetition"] == pytest.approx(np.mean(per_seed)) and rows["ref"]["repetition"] == 0.0
    lo, hi = rows["loopy"]["repetition_ci95"]
    assert 0 < lo <= rows["loopy"]["repetition"] <= hi
    # the delta keeps its sign (more repetition: a positive delta), its interval paired over images and seeds
    assert rows["loopy"]["delta_repetition"] == pytest.approx(rows["loopy"]["repetition"])
    assert rows["loopy"]["delta_repetition_ci95"][0] > 0


def test_adding_the_column_leaves_every_other_number_as_it_was(tables):
    (out, _) = tables
    keys = out["without"]["columns"]
    assert out["with"]["columns"] == [*keys, "repetition"]
    for with_, without in zip(out["with"]["rows"], out["without"]["rows"]):
        same = {k: v for k, v in with_.items() if "repetition" not in k and k != "per_seed"}
        assert same == {k: v for k, v in without.items() if k != "per_seed"}
        assert {k: v for k, v in with_["per_seed"].items() if k != "repetition"} == without["per_seed"]


def test_the_table_marks_the_column_lower_is_better(tables):
    from cim.eval.metrics import label, metric

    (out, tmp) = tables
    (col,) = metric("repetition").columns
    assert col.lower_better and label(col) == "Rep-3 ↓" and not any(c.lower_better for c in metric("capture").columns)
    md = (tmp / "with" / "captioners.md").read_text()
    assert "| Rep-3 ↓ |" in md and "- ↓: lower is better (Rep-3; a negative Δ is less of it)" in md
    assert "lower is better" not in (tmp / "without" / "captioners.md").read_text()
    assert out["with"]["lower_is_better"] == ["repetition"] and "lower_is_better" not in out["without"]
    plot = json.loads((tmp / "with" / "plot.json").read_text())
    assert {p["metric"] for p in plot} == {"Rep-3 ↓", "words"}
