"""A third-party plugin installed as a package (pip, into a folder on PYTHONPATH) is usable by name from the
`cim` command: its `cim.plugins` entry point is found through importlib.metadata, its module's decorators
register a text encoder, a benchmark format, a captioner, a judge and a metric, and `cim evaluate` runs them
all. Without the package the same command is one line naming the known entries (exit 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests" / "fixtures" / "cim_toy_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    import shutil

    source = tmp_path_factory.mktemp("src") / "cim_toy_plugin"       # pip builds in the source folder: a copy
    shutil.copytree(PLUGIN, source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, capture_output=True, text=True, timeout=300)
    assert list(target.glob("cim_toy_plugin-*.dist-info/entry_points.txt"))
    return target


def _toy_benchmark(folder: Path) -> Path:
    from PIL import Image

    rows = [{"id": "a", "image": "a.png", "reference": "a picture named a on a mat",
             "questions": {"Is the picture named a?": "Yes"}},
            {"id": "b", "image": "b.png", "reference": "a picture named b in a park",
             "questions": {"Is it in the park?": "Yes", "Is it named b?": "Yes"}}]
    for r in rows:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / r["image"])
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = folder / "toy.yaml"
    spec.write_text(f"name: toy\nformat: toy-jsonl\ndata_dir: {folder}\nmetrics: [capture, relations_qa, toy_words]\n"
                    "capture_encoder: {name: toy-hash, model: toy}\n")
    return spec


def _cim(args, cwd, pythonpath=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath or ""), str(REPO / "src")) if p)
    return subprocess.run([sys.executable, "-m", "cim.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_an_installed_plugin_is_usable_by_name_from_cim(installed, tmp_path):
    spec = _toy_benchmark(tmp_path)
    args = ["evaluate", "--benchmark", str(spec), "--captioner", "toy-echo", "--no-mlflow", "eval.judge.name=toy-mention",
            f"eval.out_dir={tmp_path / 'out'}"]
    proc = _cim(args, tmp_path, installed)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "toy" / "toy-echo" / "results.json").read_text())
    assert result["errors"] == {}
    assert result["metrics"]["toy_words"] == pytest.approx(4.0)               # "a picture named a"
    assert result["metrics"]["relations_qa"] == pytest.approx(2 / 3)          # "park" is not in b's caption
    assert result["labels"]["judge"] == "toy-mention (offline)"
    assert result["protocol"]["capture"]["text_encoder"] == "toy-hash-64"
    assert "| Toy words |" in (tmp_path / "out" / "toy" / "table.md").read_text()


def test_without_the_plugin_its_names_are_one_line_errors(installed, tmp_path):
    spec = _toy_benchmark(tmp_path)
    proc = _cim(["evaluate", "--benchmark", str(spec), "--captioner", "toy-echo", "--no-mlflow"], tmp_path)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip() and "note: no params.yaml" not in line]
    assert len(err) == 1 and err[0].startswith("cim evaluate: eval.captioner.name='toy-echo' is not a known captioner")
