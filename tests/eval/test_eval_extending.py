"""docs/extending.md, done for real in this process: the toy plugin's text encoder, benchmark format, judge and
metric, registered through the one registration path (``@REGISTRY.register(name)``), chosen by name in the
config (the stage checks the names against the registries before any work), and used end to end by the
evaluate stage: the toy metric is a column of the results table, the toy judge answers Relations QA, the toy
encoder is CAPTURE's soft-match encoder. (tests/core/test_plugins.py installs the same plugin as a package.)"""
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from cim.config import ConfigError, check_names, load_config
from cim.plugins import BENCHMARK_FORMATS, CAPTIONERS, JUDGES, METRICS, TEXT_ENCODERS
from cim.stages.evaluate import evaluate


PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "cim_toy_plugin"   # the plugin tests/core/test_plugins.py installs


@pytest.fixture()
def toys(monkeypatch):
    """The toy plugin's module imported in this process: its decorators register a text encoder, a benchmark
    format, a captioner, a judge and a metric (the same path an installed plugin's entry point takes)."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    import cim_toy_plugin  # noqa: F401

    yield
    for reg, name in ((TEXT_ENCODERS, "toy-hash"), (BENCHMARK_FORMATS, "toy-jsonl"), (JUDGES, "toy-mention"),
                      (METRICS, "toy_words"), (CAPTIONERS, "toy-echo")):
        reg.unregister(name)
    sys.modules.pop("cim_toy_plugin", None)


def test_toys_end_to_end(toys, tmp_path):
    rows = [{"id": "a", "image": "a.png", "reference": "A red cat sits on a mat.",
             "questions": {"Is the cat on the mat?": "Yes"}},
            {"id": "b", "image": "b.png", "reference": "A dog runs in a park.",
             "questions": {"Is the dog in the park?": "Yes", "Is the dog near a tree?": "Yes"}}]
    for r in rows:
        Image.new("RGB", (8, 8)).save(tmp_path / r["image"])
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "toy.yaml").write_text(f"name: toy\nformat: toy-jsonl\ndata_dir: {tmp_path}\n"
                                       "metrics: [capture, relations_qa, toy_words]\n"
                                       "capture_encoder: {name: toy-hash, model: toy}\n")   # the plugin encoder
    (tmp_path / "caps.jsonl").write_text('{"image_id": "a", "caption": "A red cat on a mat."}\n'
                                         '{"image_id": "b", "caption": "A big dog plays in the park today."}\n')
    cfg = load_config(None, [f"eval.benchmarks=[{tmp_path / 'toy.yaml'}]", f"eval.out_dir={tmp_path / 'out'}",
                             "encoders.text.name=toy-hash", "eval.judge.name=toy-mention",
                             "eval.captioner.name=file", f"eval.captioner.model={tmp_path / 'caps.jsonl'}",
                             "eval.method=mine"])
    summary = evaluate(cfg, log=lambda *a: None, track=False)
    (r,) = summary["results"]
    assert r["errors"] == {}
    assert r["metrics"]["toy_words"] == pytest.approx((6 + 8) / 2)
    assert r["metrics"]["relations_qa"] == pytest.approx(2 / 3)          # "tree" is not in caption b
    assert r["labels"]["judge"] == "toy-mention (offline)"
    assert r["protocol"]["capture"]["text_encoder"] == "toy-hash-64" and 0 < r["metrics"]["capture"] <= 1
    table = (tmp_path / "out" / "toy" / "table.md").read_text()
    assert "| Method | CAPTURE |" in table and "| Rel QA | Toy words |" in table and "| mine |" in table
    assert "| 7.000 |" in table
    assert summary["metrics"]["toy"]["mine"]["toy_words"] == pytest.approx(7.0)   # metrics.json, for DVC


def test_unregistered_names_are_config_errors(toys):
    cfg = load_config(None, ["eval.metrics=[capture,toy_words]", "eval.judge.name=toy-mention"])
    check_names(cfg, "eval.metrics", "eval.judge.name")            # registered: accepted
    METRICS.unregister("toy_words")
    with pytest.raises(ConfigError, match="eval.metrics='toy_words' is not a known metric; known: bleu_meteor, "):
        check_names(cfg, "eval.metrics")
    JUDGES.unregister("toy-mention")
    with pytest.raises(ConfigError, match="eval.judge.name='toy-mention' is not a known judge; known: lm, qwen3, "
                                          "triples"):
        evaluate(load_config(None, ["eval.judge.name=toy-mention"]), log=lambda *a: None, track=False)
