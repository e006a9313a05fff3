"""The measurement scripts under perf/ run (at toy sizes, on the CPU) and print the JSON they promise.

They measure; these tests only check that they work and that the released design they compare against
computes the same reward as this project's scorer over the same hits.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, timeout: int = 600) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_gpu_check_runs_at_toy_sizes_on_the_cpu(tmp_path):
    pytest.importorskip("open_clip")
    out = tmp_path / "gpu_check.json"
    result = _run("gpu_check.py", "--device", "cpu", "--rows", "10000", "--images", "8", "--clip-model", "ViT-B-32",
                  "--captions", "8", "16", "--caption-words", "16", "--serial-sample", "4", "--repeats", "1",
                  "--trl-steps", "1", "--out", str(out))
    assert json.loads(out.read_text()) == result
    assert result["image_encoder"]["images_per_s"] > 0 and result["image_encoder"]["dtype"] == "bfloat16"
    assert result["text_encoder"]["layers"] == 12 and result["text_encoder"]["hidden"] == 768
    assert result["gallery"]["rows"] == 10000 and result["gallery"]["bytes"]["image_fp16"] == 10000 * 1024 * 2
    assert result["trl_step"]["steps"] == 1 and result["trl_step"]["losses_finite"]
    steps = result["scorer"]["steps"]
    assert set(steps) == {"8", "16"} and all(s["latency_s"] > 0 for s in steps.values())
    released = result["released_serial"]
    assert released["extrapolated"] is True and released["calls_timed"] == 4
    checked = released["agreement_with_scorer"]
    assert checked["compared"] >= 4 and checked["max_abs_diff"] < 1e-4   # same maths over the same hits
    assert result["targets"]["applies"] is False      # toy sizes on a CPU say nothing about the targets


@pytest.mark.slow
def test_reward_vs_release_runs_at_small_sizes(tmp_path):
    out = tmp_path / "rvr.json"
    result = _run("reward_vs_release.py", "--sizes", "2000", "--http-sizes", "2000", "--captions", "24",
                  "--repeats", "1", "--out", str(out))
    assert json.loads(out.read_text()) == result
    size = result["sizes"]["2000"]
    checked = size["agreement_with_released"]               # the released design re-expressed = our maths
    assert checked["compared"] >= 4 and checked["max_abs_diff"] < 1e-5
    for key in ("encoder_only_captions_per_s", "scorer_captions_per_s", "released_captions_per_s"):
        assert size[key] > 0
    assert size["bytes"]["tables_total"] == 2000 * (384 * 4 + 1280 * 2)
    http = result["http"]["2000"]
    assert http["released_serial_requests_captions_per_s"] > 0 and http["client_batched_captions_per_s"] > 0
    assert http["service_batching_stats"]["largest_batch"] == 24       # client batching: one scorer call
    assert "load average" in result["machine"]["uptime_before"]
    assert set(result["targets"]) == {"scorer_share_100k", "scorer_share_1m", "http_speedup_vs_released"}
