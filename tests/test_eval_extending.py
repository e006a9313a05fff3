"""docs/extending.md, done for real: a toy text encoder, benchmark format, judge and metric registered through
the one registration path (``@REGISTRY.register(name)``), chosen by name in the config (the stage checks the
names against the registries before any work), and used end to end by the evaluate stage: the toy metric is a
column of the results table, the toy judge answers Relations QA, the toy encoder is CAPTURE's soft-match
encoder. (tests/test_plugins.py installs such a plugin as a package.)"""
import json
from statistics import fmean

import numpy as np
import pytest

from cim.config import ConfigError, check_names, load_config
from cim.encoders import TextEncoder, l2_normalize
from cim.eval.benchmarks import Benchmark, BenchmarkFormat, Sample, count_images, read_rows, resolve_path
from cim.eval.judges import JudgeAnswer
from cim.plugins import BENCHMARK_FORMATS, JUDGES, METRICS, TEXT_ENCODERS
from cim.stages.evaluate import evaluate


class HashingEncoder(TextEncoder):
    """Bag of words hashed into 64 dimensions (a real, if crude, text encoder)."""

    name, dim = "toy-hash", 64

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, sum(map(ord, word)) % self.dim] += 1.0
        return l2_normalize(out)

    def describe(self):
        return {"name": self.name, "model": "toy-hash-64", "dim": self.dim}


class MentionJudge:
    """Yes when the caption names the question's last word (the object asked about), else unknown."""

    name, offline = "toy-mention", True

    def answer(self, question, caption):
        return self.answer_many([(question, caption)])[0]

    def answer_many(self, pairs):
        return [JudgeAnswer("yes" if q.rstrip("?").split()[-1].lower() in c.lower() else "unknown", "toy")
                for q, c in pairs]

    def describe(self):
        return {"name": self.name, "offline": True}


@pytest.fixture()
def toys():
    @TEXT_ENCODERS.register("toy-hash")
    def build_encoder(cfg):
        return HashingEncoder()

    @BENCHMARK_FORMATS.register("toy-jsonl")
    class ToyJsonl(BenchmarkFormat):
        """``samples.jsonl``: one ``{"id", "reference", "questions": {question: answer}}`` per line."""

        def load(self, spec, root):
            rows = read_rows(resolve_path(root, spec.data_dir) / "samples.jsonl")
            bench = Benchmark(spec, [Sample(r["id"], None, [r["reference"]]) for r in rows])
            bench.questions = {r["id"]: r["questions"] for r in rows}
            return count_images(bench)

    @JUDGES.register("toy-mention")
    def build_judge(model, *, parser, backend, device):
        return MentionJudge()

    @METRICS.register("words", columns=[("words", "Words", False)], order=60)
    def words(ev, bench, refs, captions, res):
        res.metrics["words"] = fmean(len(c.split()) for c in captions.values())

    yield
    TEXT_ENCODERS.unregister("toy-hash")
    BENCHMARK_FORMATS.unregister("toy-jsonl")
    JUDGES.unregister("toy-mention")
    METRICS.unregister("words")


def test_toys_end_to_end(toys, tmp_path):
    rows = [{"id": "a", "reference": "A red cat sits on a mat.", "questions": {"Is the cat on the mat?": "Yes"}},
            {"id": "b", "reference": "A dog runs in a park.", "questions": {"Is the dog in the park?": "Yes",
                                                                            "Is the dog near a tree?": "Yes"}}]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "toy.yaml").write_text(f"name: toy\nformat: toy-jsonl\ndata_dir: {tmp_path}\n"
                                       "metrics: [capture, relations_qa, words]\n"
                                       "capture_encoder: {name: toy-hash, model: toy}\n")   # the plugin encoder
    (tmp_path / "caps.jsonl").write_text('{"id": "a", "caption": "A red cat on a mat."}\n'
                                         '{"id": "b", "caption": "A big dog plays in the park today."}\n')
    cfg = load_config(None, [f"eval.benchmarks=[{tmp_path / 'toy.yaml'}]", f"eval.out_dir={tmp_path / 'out'}",
                             "encoders.text.name=toy-hash", "eval.judge.name=toy-mention",
                             "eval.captioner.name=file", f"eval.captioner.model={tmp_path / 'caps.jsonl'}",
                             "eval.method=mine"])
    summary = evaluate(cfg, log=lambda *a: None, track=False)
    (r,) = summary["results"]
    assert r["errors"] == {}
    assert r["metrics"]["words"] == pytest.approx((6 + 8) / 2)
    assert r["metrics"]["relations_qa"] == pytest.approx(2 / 3)          # "tree" is not in caption b
    assert r["labels"]["judge"] == "toy-mention (offline)"
    assert r["protocol"]["capture"]["text_encoder"] == "toy-hash-64" and 0 < r["metrics"]["capture"] <= 1
    table = (tmp_path / "out" / "toy" / "table.md").read_text()
    assert "| Method | CAPTURE | Rel QA | Words |" in table and "| mine |" in table and "| 7.000 |" in table
    assert summary["metrics"]["toy"]["mine"]["words"] == pytest.approx(7.0)   # metrics.json, for DVC


def test_unregistered_names_are_config_errors(toys):
    cfg = load_config(None, ["eval.metrics=[capture,words]", "eval.judge.name=toy-mention"])
    check_names(cfg, "eval.metrics", "eval.judge.name")            # registered: accepted
    METRICS.unregister("words")
    with pytest.raises(ConfigError, match="eval.metrics='words' is not a known metric; known: bleu_meteor, "):
        check_names(cfg, "eval.metrics")
    JUDGES.unregister("toy-mention")
    with pytest.raises(ConfigError, match="eval.judge.name='toy-mention' is not a known judge; known: lm, qwen3, "
                                          "triples"):
        evaluate(load_config(None, ["eval.judge.name=toy-mention"]), log=lambda *a: None, track=False)
