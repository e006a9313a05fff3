"""Every number in a row counts the same images (hand-made cases): a captions file that covers part of a
benchmark, one with failed rows, and a metric's own skip rule -- through `cim evaluate` and `cim compare`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFS = {"a": "A red circle on the green grass.", "b": "A small blue square next to a tree.",
        "c": "A yellow star above a wooden fence.", "d": "Two brown dogs run on the sand."}


@pytest.fixture()
def bench(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(REFS))
    (tmp_path / "q.json").write_text(json.dumps({k: {"Is there a tree?": "Yes"} for k in REFS}))
    spec = tmp_path / "hand.yaml"
    spec.write_text(f"name: hand\nformat: sc-captioner\ndata_dir: {tmp_path}\n"
                    "files: {references: gt.json, questions: q.json}\nmetrics: [capture, bleu_meteor, caption_words]\n"
                    "capture_encoder: all-MiniLM-L6-v2\n")
    return spec


def _captions(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cim(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "cim.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _one_line(proc, command):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"cim {command}: ") and ": note: " not in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_a_partial_captions_file_is_an_error_unless_a_subset_is_asked_for(bench, tmp_path):
    caps = _captions(tmp_path / "partial.jsonl", [{"image_id": k, "caption": REFS[k]} for k in ("a", "b")])
    base = ["evaluate", "--benchmark", str(bench), "--captions", str(caps), "--method", "mine", "--no-mlflow",
            f"eval.out_dir={tmp_path / 'out'}"]
    line = _one_line(cim(*base, cwd=tmp_path), "evaluate")
    assert "captions cover 2 of 4 images" in line and "--subset" in line
    proc = cim(*base, "--subset", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "out/hand/mine/results.json").read_text())
    assert r["counts"]["coverage"]["captioned"] == 2 and r["counts"]["coverage"]["without_caption"] == 2
    # every metric on the same two images, no empty caption invented for the other two (before, CAPTURE and
    # BLEU counted them as empty captions scored 0, beside a fine-grained score over the captioned ones)
    items = [json.loads(x) for x in (tmp_path / "out/hand/mine/items.jsonl").read_text().splitlines()]
    assert [i["id"] for i in items] == ["a", "b"]
    assert r["metrics"]["capture"] == pytest.approx(sum(i["capture"] for i in items) / 2)
    assert r["counts"]["capture"]["samples"] == 2 and r["counts"]["capture"]["empty_candidate"] == 0
    assert r["metrics"]["bleu4"] == pytest.approx(1.0, abs=1e-6)          # the references themselves
    assert "2 of 4 images captioned" in (tmp_path / "out/hand/table.md").read_text()


def test_failed_rows_count_as_not_captioned_in_compare(bench, tmp_path):
    good = _captions(tmp_path / "good.jsonl", [{"image_id": k, "caption": v} for k, v in REFS.items()])
    failed = _captions(tmp_path / "failed.jsonl", [{"image_id": k, "caption": v} for k, v in REFS.items() if k != "d"]
                       + [{"image_id": "d", "caption": "", "error": "CUDA out of memory"}])
    args = ["compare", "--benchmark", str(bench), "--captions", f"ref={good}", "--captions", f"mine={failed}",
            "--baseline", "ref", "--out", str(tmp_path / "res"), "--no-mlflow", "pipeline.n_boot=100"]
    line = _one_line(cim(*args, cwd=tmp_path), "compare")
    assert "captions cover 3 of 4 images" in line and "failed" in line
    proc = cim(*args, "--subset", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads((tmp_path / "res/captioners.json").read_text())
    rows = {r["captioner"]: r for r in table["rows"]}
    assert table["samples"] == 3 and all(r["samples"] == 3 for r in rows.values())     # both rows on a, b, c
    assert rows["mine"]["coverage"]["failed"] == 1 and rows["ref"]["coverage"]["failed"] == 0
    assert rows["mine"]["capture"] == pytest.approx(rows["ref"]["capture"])            # the same captions there


def test_a_metrics_own_skip_rule_is_counted_and_shown(tiny_cfg, tiny_index_dir, tmp_path):
    """SC-Captioner's fine-grained rule leaves out an image whose caption names no attribute: counted in the
    result and written in the table's notes, never silent."""
    import copy

    from cim.eval.evaluate import Evaluator

    (tmp_path / "gt.json").write_text(json.dumps(REFS))
    (tmp_path / "obj.jsonl").write_text("".join(json.dumps({k: ["circle", "square", "star", "dog"]}) + "\n"
                                                for k in REFS))
    (tmp_path / "attr.json").write_text(json.dumps({k: {"circle": ["red"], "dog": ["brown"]} for k in REFS}))
    spec = tmp_path / "fg.yaml"
    spec.write_text(f"name: fg\nformat: sc-captioner\ndata_dir: {tmp_path}\nfiles: {{references: gt.json, "
                    "gpt_objects: obj.jsonl, gpt_attributes: attr.json}\nmetrics: [fine_grained]\n"
                    "capture_encoder: all-MiniLM-L6-v2\n")
    caps = {"a": "A red circle on the green grass.", "b": "A square.", "c": "A star.", "d": "Two brown dogs."}
    cfg = copy.deepcopy(tiny_cfg)
    cfg.eval.benchmarks, cfg.eval.out_dir = [str(spec)], str(tmp_path / "out")
    ev = Evaluator(cfg, log=lambda *a: None)
    res = ev.evaluate(ev.load(str(spec)), "mine", caps, ["fine_grained"])
    fg = res.counts["fine_grained"]
    assert fg["skipped_no_attributes"] == 2 and fg["scored"] == 2                     # b and c: no attribute
    from cim.eval.results import coverage_notes

    assert any("fine_grained skipped 2 of 4 images" in n for n in coverage_notes("mine", res.counts))
