"""The evaluate stage end to end on the tiny generated world and its real index (conftest fixtures):
graded captions -> CAPTURE, fine-grained, Relations QA, CIM -> results, table with deltas, verification
experiment, parser recall, MLflow; and bad input counted without stopping the run."""
import copy
import json
from pathlib import Path

import pytest

from cim.eval.evaluate import Evaluator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def eval_cfg(tiny_cfg, tiny_world, tiny_index_dir, tmp_path_factory):
    cfg = copy.deepcopy(tiny_cfg)
    cfg.eval.out_dir = str(tmp_path_factory.mktemp("eval"))
    # its own MLflow store: other modules on this worker log evaluate runs into the shared tiny store
    cfg.tracking.uri = f"sqlite:///{tmp_path_factory.mktemp('eval-mlflow')}/mlflow.db"
    cfg.eval.data_dirs = {"world": str(tiny_world)}
    cfg.eval.metrics = ["capture", "fine_grained", "relations_qa", "cim", "verification", "parser_recall"]
    cfg.eval.baseline = "coarse-correct"
    cfg.eval.bin_size = 5
    return cfg


@pytest.fixture(scope="module")
def summary(eval_cfg):
    return Evaluator(eval_cfg, root=REPO, log=lambda *a: None).run()


def test_world_levels_table(summary, eval_cfg):
    rows = {r["method"]: r for r in summary["results"]}
    assert set(rows) == {"coarse-correct", "detailed-correct", "partly-wrong", "wrong"}
    for r in rows.values():
        assert r["errors"] == {}, r["errors"]
        assert r["labels"]["parser"].startswith("spacy-rules") and r["labels"]["judge"].endswith("(offline)")
        assert r["counts"]["cim"]["scored"] == 10 and r["protocol"]["relations_qa"]["offline_judge"] is True
    best = rows["detailed-correct"]["metrics"]
    assert best["capture"] == pytest.approx(1.0, abs=1e-4)          # the reference is the detailed caption
    assert best["object_recall"] == pytest.approx(1.0, abs=1e-4)
    for m in ("capture", "object_f1", "relations_qa"):
        assert best[m] > rows["wrong"]["metrics"][m]
    assert best["cim"] > rows["wrong"]["metrics"]["cim"]
    table = (Path(eval_cfg.eval.out_dir) / "world" / "table.md").read_text()
    assert "(deltas vs coarse-correct)" in table and "| ○ coarse-correct |" in table and "↑" in table
    items = (Path(eval_cfg.eval.out_dir) / "world" / "wrong" / "items.jsonl").read_text().splitlines()
    assert len(items) == 10 and {"caption", "capture", "cim", "cim_grc", "cim_qir"} <= set(json.loads(items[0]))


def test_verification_and_parser_recall(summary, eval_cfg):
    info = summary["benchmarks"]["world"]
    ver = info["verification"]
    assert ver["n_scored"] == 40 and ver["score"]["n_bins"] == 8 and ver["bin_size"] == 5
    assert ver["per_method_accuracy"]["detailed-correct"]["fine"] == 1.0
    assert ver["per_method_accuracy"]["coarse-correct"]["fine"] == 0.0
    assert -1 <= ver["qir"]["pearson_r"] <= 1 and "names_fine_label" in ver["classifier"]
    assert (Path(eval_cfg.eval.out_dir) / "world" / "verification.png").stat().st_size > 1000
    rec = info["parser_recall"]
    assert rec["object_recall"] > 0.9 and 0 < rec["attribute_recall"] <= 1 and rec["captions"] == 10


def test_mlflow_logging(summary, eval_cfg):
    import mlflow

    from cim.eval.results import headline
    from cim.stages.evaluate import log_evaluation
    from cim.tracking import tracking_uri

    log_evaluation(eval_cfg, summary, Path(eval_cfg.eval.out_dir))
    mlflow.set_tracking_uri(tracking_uri(eval_cfg))
    runs = mlflow.search_runs(experiment_names=[eval_cfg.tracking.experiment], filter_string="tags.stage = 'evaluate'")
    assert len(runs) == 1
    assert "metrics.world/detailed-correct/delta_capture" in runs.columns
    assert "metrics.world/verification/pearson_r_score" in runs.columns
    head = headline(summary)
    assert head["world"]["detailed-correct"]["capture"] == pytest.approx(1.0, abs=1e-4)
    assert set(head["world"]["verification"]) == {"pearson_r_grc", "pearson_r_qir", "pearson_r_score"}


def test_bad_input_is_counted_not_fatal(tiny_cfg, tiny_index_dir, tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps({"a": "A red circle on grass.", "b": "A blue square.", "c": "A star."}))
    (tmp_path / "q.json").write_text(json.dumps({"a": {"Is the circle on the grass?": "Yes", "Where?": "Up"}}))
    (tmp_path / "bench.yaml").write_text(
        f"name: handmade\nformat: sc-captioner\ndata_dir: {tmp_path}\n"
        "files: {references: gt.json, questions: q.json}\nmetrics: [capture, fine_grained, relations_qa, cim]\n"
        "capture_encoder: all-MiniLM-L6-v2\n")          # the embedded SBERT (CAPTURE's own is not offline)
    (tmp_path / "caps.jsonl").write_text('{"image_id": "a", "caption": "A red circle sits on the grass."}\n'
                                         '{"image_id": "b", "caption": ""}\n{"image_id": "zzz", "caption": "stray"}\n')
    cfg = copy.deepcopy(tiny_cfg)
    cfg.eval.benchmarks = [str(tmp_path / "bench.yaml")]
    cfg.eval.out_dir = str(tmp_path / "out")
    cfg.eval.captioner.name, cfg.eval.captioner.model, cfg.eval.method = "file", str(tmp_path / "caps.jsonl"), "mine"
    cfg.eval.allow_partial = True       # "c" is not in the file: every metric counts a and b alone
    r = Evaluator(cfg, log=lambda *a: None).run()["results"][0]
    assert r["captions"]["counts"]["not_in_file"] == 1
    assert r["counts"]["coverage"] == {"samples": 3, "captioned": 2, "without_caption": 1, "empty": 1,
                                       "ids_not_in_benchmark": 0}   # (the file captioner captions benchmark ids)
    assert r["counts"]["capture"]["empty_candidate"] == 1                      # b's empty caption, scored 0
    assert "fine_grained" in r["errors"] and "reference lists" in r["errors"]["fine_grained"]   # isolated
    assert r["counts"]["relations_qa"]["non_yes_no_reference"] == 1 and r["metrics"]["relations_qa"] == 1.0
    assert r["counts"]["cim"]["failed"] == 2 and r["counts"]["cim"]["scored"] == 0         # no image, no source
    assert r["metrics"]["cim"] is None and 0 < r["metrics"]["capture"] < 1


def test_command_arguments_map_to_overrides():
    import argparse

    from cim.cli import evaluate as commands
    from cim.config import load_config

    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")     # what cim.cli adds to every command
    commands.add_arguments(parser)
    args = parser.parse_intermixed_args(["--benchmark", "cocoln500", "--benchmark", "docci500", "--captions", "p.jsonl",
                                         "--method", "ours", "--baseline", "base", "eval.judge.name=qwen3"])
    cfg = load_config(None, [*args.overrides, *commands.option_overrides(args)])
    assert list(cfg.eval.benchmarks) == ["cocoln500", "docci500"] and cfg.eval.judge.name == "qwen3"
    assert (cfg.eval.captioner.name, cfg.eval.captioner.model, cfg.eval.method, cfg.eval.baseline) == \
        ("file", "p.jsonl", "ours", "base")
