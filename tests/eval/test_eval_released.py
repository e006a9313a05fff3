"""Released checkpoints as named captioners, the evaluation plan, the offline error, the paper's reference
rows, and CAPTURE's encoder declared per benchmark (never the retrieval encoder)."""
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cim.errors import ConfigError, WeightsNotFound
from cim.eval.evaluate import Evaluator
from cim.eval.released import RELEASES, ReleasedCaptioner
from test_eval_captioners import tiny_llava

REPO = Path(__file__).resolve().parents[2]
# the paper's text among the project's reference files, when this checkout sits beside them (else skipped)
PAPER = next((p / "shared" / "paper" / "cim-arxiv-2603.01696.txt" for p in (REPO.parent, REPO.parent.parent)
              if (p / "shared" / "paper" / "cim-arxiv-2603.01696.txt").is_file()), Path("/nonexistent"))

# the released checkpoints and their base models (the project's reference notes on the release)
RELEASED = {
    "kkk5/CIM-Qwen2-VL-7B": ("Qwen/Qwen2-VL-7B-Instruct", "GRPO"),
    "kkk5/CIM-Qwen2.5-VL-7B": ("Qwen/Qwen2.5-VL-7B-Instruct", "GRPO"),
    "kkk5/CIM-LLaVA1.5-7B": ("llava-hf/llava-1.5-7b-hf", "GRPO"),
    "kkk5/CIM-InternVL2-8B": ("OpenGVLab/InternVL2-8B", "GRPO"),
    "kkk5/CIM-InternVL2.5-8B": ("OpenGVLab/InternVL2_5-8B", "GRPO"),
    "kkk5/CIM-InternVL3-8B": ("OpenGVLab/InternVL3-8B-hf", "GRPO"),
    "kkk5/CIM-Qwen2-VL-7B-SFT": ("Qwen/Qwen2-VL-7B-Instruct", "SFT + GRPO"),
    "kkk5/CIM-LLaVA1.5-7B-SFT": ("llava-hf/llava-1.5-7b-hf", "SFT + GRPO"),
}


def _env(tmp_path):
    return {**os.environ, "HF_HOME": str(tmp_path / "empty-hub"), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO / "src")}


def test_every_released_checkpoint_is_a_named_captioner_with_its_base():
    from cim.eval.captioners import CAPTIONERS

    assert {name: (r.base, r.training) for name, r in RELEASES.items()} == RELEASED
    assert set(RELEASED) <= set(CAPTIONERS.names())
    for r in RELEASES.values():        # each one's published rows exist in both benchmarks
        for bench in ("cocoln500", "docci500"):
            from cim.eval.benchmarks import load_spec

            assert {r.paper_base, r.paper_row} <= set(load_spec(bench, REPO).paper)


def test_offline_the_command_fails_with_one_weights_not_found_line(tmp_path, defaults_params):
    out = subprocess.run([sys.executable, "-m", "cim.cli", "evaluate", "--protocol", "official", "--captioner",
                          "kkk5/CIM-Qwen2.5-VL-7B", "--no-mlflow", "--params", str(defaults_params)],
                         cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("cim evaluate: weights of kkk5/CIM-Qwen2.5-VL-7B not found: they are not on this machine")
    assert "huggingface-cli download kkk5/CIM-Qwen2.5-VL-7B" in lines[0] and "eval.captioner.model=DIR" in lines[0]


def test_the_plan_of_the_official_evaluation_of_the_released_qwen25(tmp_path, defaults_params):
    out = subprocess.run([sys.executable, "-m", "cim.cli", "evaluate", "--protocol", "official", "--captioner",
                          "kkk5/CIM-Qwen2.5-VL-7B", "--with-base", "--dry-run", "--params", str(defaults_params)],
                         cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["protocol"]["name"] == "official" and plan["protocol"]["deviations"] == {}
    cap = plan["captioner"]
    assert (cap["release"], cap["base"], cap["engine"], cap["max_new_tokens"]) == (
        "kkk5/CIM-Qwen2.5-VL-7B", "Qwen/Qwen2.5-VL-7B-Instruct", "vllm", 1024)
    assert cap["weights"] is None and "not on this machine" in cap["weights_missing"]
    assert cap["base_weights"] is None and "Qwen/Qwen2.5-VL-7B-Instruct" in cap["base_weights_missing"]
    assert plan["decoding"]["greedy"] is True
    assert plan["judge"] == {"name": "qwen3", "model": "Qwen/Qwen3-8B", "backend": "vllm"}
    assert plan["parser"]["name"] == "factual"
    coco, docci = plan["benchmarks"]
    assert (coco["name"], docci["name"]) == ("cocoln500", "docci500")
    for b in (coco, docci):
        assert b["prompt"] == ("Caption this image as accurately as possible, without speculation. "
                               "Describe what you see.")
        assert b["capture_encoder"] == "all-mpnet-base-v2"
        assert set(b["paper_rows"]) == {"qwen2.5-vl-7b/base", "qwen2.5-vl-7b/cim"}
    assert coco["paper_rows"]["qwen2.5-vl-7b/cim"]["capture"] == 48.93
    assert docci["paper_rows"]["qwen2.5-vl-7b/base"]["relations_qa"] == 24.35


@pytest.fixture()
def handmade(tmp_path):
    """A two-image sc-captioner benchmark with published rows for LLaVA-1.5-7B (numbers made up here)."""
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"{name}.jpg")
    (tmp_path / "gt.json").write_text(json.dumps({"a": "A red circle on grass.", "b": "A blue square."}))
    (tmp_path / "bench.yaml").write_text(
        f"name: handmade\nformat: sc-captioner\ndata_dir: {tmp_path}\nimages: {tmp_path}\n"
        "files: {references: gt.json}\nmetrics: [capture]\ncapture_encoder: all-MiniLM-L6-v2\n"
        "paper:\n  llava-1.5-7b/base: {capture: 41.5}\n  llava-1.5-7b/cim: {capture: 47.25}\n"
        "  qwen2-vl-7b/base: {capture: 12.0}\n")
    return tmp_path


def test_a_released_checkpoint_runs_from_its_folder_and_the_table_shows_the_paper(tiny_cfg, handmade):
    model = handmade / "ckpt"
    tiny_llava(model)
    cfg = copy.deepcopy(tiny_cfg)
    cfg.eval.benchmarks = [str(handmade / "bench.yaml")]
    cfg.eval.out_dir = str(handmade / "out")
    c = cfg.eval.captioner
    c.name, c.model, c.engine, c.max_new_tokens, c.device = "kkk5/CIM-LLaVA1.5-7B", str(model), "hf", 3, "cpu"
    cfg.protocol = "paper"        # recorded (values of the tiny config kept: deviations listed)
    summary = Evaluator(cfg, log=lambda *a: None).run()
    [r] = summary["results"]
    assert r["method"] == "CIM-LLaVA1.5-7B (released)" and r["errors"] == {}
    assert r["captions"]["describe"]["release"] == "kkk5/CIM-LLaVA1.5-7B"
    assert r["captions"]["describe"]["base"] == "llava-hf/llava-1.5-7b-hf"
    assert r["captions"]["counts"]["captioned"] == 2
    assert r["protocol"]["protocol"]["name"] == "paper" and r["labels"]["protocol"].startswith("paper (deviations:")
    table = (handmade / "out" / "handmade" / "table.md").read_text()
    assert "| ◇ paper: llava-1.5-7b/cim | 47.25 |" in table and "| ◇ paper: llava-1.5-7b/base | 41.50 |" in table
    assert "qwen2-vl-7b" not in table                  # only the rows of the evaluated model
    assert "- protocol: paper (deviations:" in table and "◇ rows: the paper's published numbers" in table
    from cim.eval.results import headline, mlflow_metrics

    assert list(headline(summary)["handmade"]) == ["CIM-LLaVA1.5-7B (released)"]   # published rows are not results
    assert not any("paper" in k for k in mlflow_metrics(summary["results"]))


def test_with_base_needs_the_base_weights_too(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))
    model = tmp_path / "ckpt"
    tiny_llava(model)
    c = copy.deepcopy(tiny_cfg.eval.captioner)
    c.model, c.with_base = str(model), True
    with pytest.raises(WeightsNotFound, match="weights of llava-hf/llava-1.5-7b-hf not found"):
        ReleasedCaptioner(c, RELEASES["kkk5/CIM-LLaVA1.5-7B"])


def test_internvl_remote_code_checkpoints_need_vllm(tiny_cfg, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["InternVLChatModel"]}))
    c = copy.deepcopy(tiny_cfg.eval.captioner)
    c.model, c.engine = str(tmp_path), "hf"
    cap = ReleasedCaptioner(c, RELEASES["kkk5/CIM-InternVL2-8B"])
    with pytest.raises(ConfigError, match="eval.captioner.engine=vllm"):
        cap.caption([("a", tmp_path / "x.jpg")], "Describe.")


def test_capture_encoder_is_the_benchmarks_never_the_retrieval_encoder(tiny_cfg, tiny_world, tmp_path):
    from cim.eval.benchmarks import load_benchmark

    cfg = copy.deepcopy(tiny_cfg)
    cfg.encoders.text.model = str(tmp_path / "no-such-retrieval-encoder")      # would fail if it were loaded
    ev = Evaluator(cfg, root=REPO, log=lambda *a: None)
    world = load_benchmark("world", REPO, data_dir=str(tiny_world))
    assert ev.capture_encoder(world) == {"name": "sentence-transformers", "model": "all-MiniLM-L6-v2"}
    from cim.eval.benchmarks import load_spec

    assert load_spec("cocoln500", REPO).capture_encoder == load_spec("docci500", REPO).capture_encoder \
        == "all-mpnet-base-v2"
    cfg.eval.out_dir, cfg.eval.data_dirs, cfg.eval.metrics = str(tmp_path / "out"), {"world": str(tiny_world)}, ["capture"]
    results = Evaluator(cfg, root=REPO, log=lambda *a: None).run()["results"]
    assert all(r["errors"] == {} for r in results)
    assert {r["protocol"]["capture"]["text_encoder"] for r in results} == {"all-MiniLM-L6-v2"}


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper's text is not on this machine")
def test_the_published_rows_are_the_papers_tables():
    import yaml

    text = PAPER.read_text()
    for bench in ("cocoln500", "docci500"):
        paper = yaml.safe_load((REPO / "configs" / "benchmarks" / f"{bench}.yaml").read_text())["paper"]
        assert len(paper) == 18                     # Table 2: 6 models x 2 rows; Table 3: 2 models x 3 rows
        for key, row in paper.items():
            numbers = [f"{row[k]:.2f}" for k in ("capture", "object_precision", "object_recall", "object_f1",
                                                 "attribute_precision", "attribute_recall", "attribute_f1",
                                                 "relations_qa")]
            # one row of the table: the numbers in order, arrows "(\uparrow3.9)" between them, "37.2" for 37.20
            pattern = r"(?:\s|\([^)]*\))+".join(re.escape(n[:-1]) + "0?" if n.endswith("0") else re.escape(n)
                                                for n in numbers)
            assert re.search(pattern, text), (bench, key)
