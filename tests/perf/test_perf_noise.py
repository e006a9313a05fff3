"""perf/encoder_batch_noise.py runs at a toy size and reports the encoder's batch noise as JSON."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_encoder_batch_noise_runs_at_a_toy_size(tmp_path):
    out = tmp_path / "noise.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "encoder_batch_noise.py"), "--probes", "4",
                           "--corpus", "60", "--threads", "1", "--sizes", "2", "8", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert set(result["threads"]["1"]["by_composition_and_size"]["shuffled"]) == {"2", "8"}
    worst = result["worst"]
    # fp32 on a CPU: batch noise exists (sorting and padding) but stays far below the tie tolerance
    assert 0.0 <= worst["max_abs_gap"] <= 2 * worst["max_abs_sim"] + 1e-12 and worst["max_abs_sim"] < 1e-6
    assert set(result["gaps"]["share_below"]) == {"1e-07", "1e-06", "1e-05", "0.0001"}
    assert "load average" in result["machine"]["uptime_before"]
