"""The full-scale path end to end on CPU (`python -m e2e.full_path` in tests/e2e/full_path, `make smoke-full`,
docs/full-scale.md).

The slow test runs the whole chain once (about 5 min on 2 cores) and checks what each step handed the next:
the real encoders' dimensions in the index, verl's rollouts scored through `cim serve`, the rollout
log-probs against the actor's recomputation, the merged checkpoint's layout and dtype, captions of every
benchmark image from both policies, every metric of `cim evaluate`, the compare table's deltas. The fast
tests cover the runner (the first failing step stops the chain with one line) and the CLI's arguments.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.full_path.runner import Context, Step, StepFailed, run_steps

REPO = Path(__file__).resolve().parents[2]
HARNESS = "e2e.full_path"        # tests/e2e/full_path, imported with tests/ on sys.path


def _env() -> dict:
    """This checkout's CIM (src) and the harness (tests) first on PYTHONPATH."""
    first = [str(REPO / "src"), str(REPO / "tests")]
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in first]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(first + rest)}


# -- the runner ---------------------------------------------------------------------------------------------
def test_the_first_failing_step_stops_the_chain_with_one_line(tmp_path):
    ran, lines, cleaned = [], [], []

    def ok(ctx):
        ran.append(ctx.current)
        return {"n": 1}

    def broken(ctx):
        ran.append(ctx.current)
        raise StepFailed("expected 3 rows, got 2")

    def crash(ctx):
        raise KeyError("image_grid_thw")

    ctx = Context(tmp_path, progress=lines.append)
    ctx.cleanups.append(lambda: cleaned.append(True))
    steps = [Step("a", "first", ok), Step("b", "second hands rows", broken), Step("c", "never", ok)]
    summary = run_steps(steps, ctx, tmp_path / "summary.json")
    assert ran == ["a", "b"] and cleaned == [True]
    assert [s["status"] for s in summary["steps"]] == ["passed", "failed", "not run"]
    assert summary["status"] == "failed" and summary["failed_step"] == "b"
    assert summary["message"] == "step 2/3 b failed (second hands rows): expected 3 rows, got 2"
    assert lines[-1] == "smoke: " + summary["message"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert Path(summary["steps"][1]["traceback"]).is_file()
    # an unexpected exception is named by its type and innermost frame
    summary = run_steps([Step("x", "crash", crash)], Context(tmp_path, progress=lines.append), tmp_path / "s2.json")
    assert summary["steps"][0]["error"].startswith("KeyError: 'image_grid_thw' [test_smoke_full.py:")


def test_verl_overrides_are_read_from_the_dry_run_command():
    from e2e.full_path.rollout import verl_overrides
    from cim.train.verl.launch import format_command, main_ppo_command

    overrides = ["algorithm.adv_estimator=grpo", "trainer.logger=['console', 'mlflow']",
                 "+reward.custom_reward_function.reward_kwargs.service_url=http://127.0.0.1:1"]
    text = "# protocol: none; reward: ...\n" + format_command(main_ppo_command(overrides), {"MLFLOW_RUN_ID": "<run>"})
    assert verl_overrides(text) == overrides
    with pytest.raises(ValueError, match="main_ppo"):
        verl_overrides("nothing here")


def test_cli_help_a_missing_profile_and_a_folder_it_will_not_empty(tmp_path):
    env = _env()
    out = subprocess.run([sys.executable, "-m", HARNESS, "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "--out" in out.stdout and "compare" in out.stdout
    out = subprocess.run([sys.executable, "-m", HARNESS, "--out", str(tmp_path / "o"), "--profile",
                          str(tmp_path / "none.yaml")], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "not found" in out.stderr
    keep = tmp_path / "mine"                                # a folder that is not an earlier run is never emptied
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    out = subprocess.run([sys.executable, "-m", HARNESS, "--out", str(keep)], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 2 and "not empty" in out.stderr and (keep / "notes.txt").is_file()


# -- the chain ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "full-tiny"
    env = _env()
    env.pop("MLFLOW_TRACKING_URI", None)      # the profile's own store, inside the out folder
    proc = subprocess.run([sys.executable, "-m", HARNESS, "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=1500)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return proc, summary, out


def _outputs(summary, name):
    return next(s for s in summary["steps"] if s["name"] == name)["outputs"]


@pytest.mark.slow
def test_every_step_passes_in_order(chain):
    proc, summary, out = chain
    assert proc.returncode == 0, (summary.get("message"), proc.stdout[-3000:], proc.stderr[-3000:])
    assert summary["status"] == "passed"
    from e2e.full_path.chain import STEPS

    names = [s["name"] for s in summary["steps"]]
    assert names == [s.name for s in STEPS]                 # every step of the chain, in its order
    core = ["build", "manifest", "index", "prepare-train", "verl-config", "verl-data", "serve", "rollout",
            "grpo-update", "checkpoint", "caption-base", "caption-trained", "evaluate", "compare"]
    assert [n for n in names if n in core] == core          # the verl path, whatever legs are added around it
    assert all(s["status"] == "passed" and s["seconds"] is not None for s in summary["steps"])
    assert "smoke: passed" in proc.stdout


@pytest.mark.slow
def test_the_index_holds_the_real_encoders_and_the_reward_goes_through_the_service(chain):
    _, summary, out = chain
    idx = _outputs(summary, "index")
    assert idx["dims"] == {"text": 768, "image": 32}            # all-mpnet-base-v2, the tiny ViT's embed_dim
    assert idx["rows"] == _outputs(summary, "manifest")["corpus_rows"] == 48 and idx["sources"] == 14
    meta = json.loads((out / "data/index/meta.json").read_text())
    assert "ViT-Tiny-16-smoke" in json.dumps(meta) and "model_config_sha256" in json.dumps(meta)
    roll = _outputs(summary, "rollout")
    assert roll["rollouts"] == 8 and roll["server_requests"] == 8 and roll["reward_workers"] == 1
    assert 0 < roll["grc_mean"] <= 1.0 + 1e-6 and math.isfinite(roll["reward_mean"])
    rows = [json.loads(line) for line in (out / "logs/rollouts.jsonl").read_text().splitlines()]
    train = [json.loads(line)["id"] for line in (out / "data/train.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and [r["image_id"] for r in rows] == [i for i in train[:2] for _ in range(4)]


@pytest.mark.slow
def test_one_grpo_step_and_the_merged_checkpoint(chain):
    _, summary, out = chain
    g = _outputs(summary, "grpo-update")
    assert g["max_rollout_vs_actor_logprob_gap"] < 1e-4
    assert g["tensors_changed"] == g["tensors"] > 0 and g["grad_norm"] > 0
    assert g["optimizer"] == "Adam" and g["weight_decay"] == 0.0
    adv = g["advantages"]                                  # GRPO: zero-mean within each group of 4 rollouts
    assert len(adv) == 8 and all(abs(sum(adv[i:i + 4])) < 1e-3 for i in (0, 4))
    c = _outputs(summary, "checkpoint")
    assert c["dtype"] == "bfloat16" and {"config.json", "model.safetensors", "tokenizer.json",
                                         "processor_config.json"} <= set(c["files"])
    actor = out / c["actor_dir"]
    assert (actor / "model_world_size_1_rank_0.pt").is_file() and (actor / "huggingface" / "config.json").is_file()


@pytest.mark.slow
def test_captions_evaluation_and_comparison(chain):
    _, summary, out = chain
    for step in ("caption-base", "caption-trained"):
        cap = _outputs(summary, step)
        assert cap["images"] == 6
    trained = [json.loads(line) for line in (out / "reports/captions/cim/captions.jsonl").read_text().splitlines()]
    assert all(r["captioner"] == "hf:checkpoints/hf/global_step_1" and r["error"] is None for r in trained)
    ev = _outputs(summary, "evaluate")
    assert all(isinstance(ev["metrics"][m], float) for m in ("capture", "relations_qa", "bleu4", "meteor", "cim"))
    assert ev["relations_qa"]["scored"] == 28 and ev["labels"]["parser"] == "factual:models/factual"
    assert ev["labels"]["judge"] == "lm:models/judge"
    assert ev["fine_grained"]["scored"] + ev["fine_grained"]["skipped_no_attributes"] == 6
    cmp_ = _outputs(summary, "compare")
    assert cmp_["rows"] == ["base", "cim"]
    table = {r["captioner"]: r for r in json.loads((out / "reports/results/captioners.json").read_text())["rows"]}
    assert cmp_["delta"]["cim"] == pytest.approx(table["cim"]["cim"] - table["base"]["cim"])
    for metric in ("capture", "cim"):                      # compare scores with the same code as evaluate
        assert table["cim"][metric] == pytest.approx(ev["metrics"][metric])


@pytest.mark.slow
def test_the_trl_leg_trains_and_its_final_folder_captions_the_benchmark(chain):
    _, summary, _ = chain
    trl = _outputs(summary, "trl-train")
    assert trl["steps"] == 2 and all(math.isfinite(x) for x in trl["loss"])
    assert all(r is not None for r in trl["reward_per_step"]) and trl["images"] > 0
