"""`cim train --backend trl`: TRL's GRPOTrainer (the pinned release) on the tiny random Qwen2.5-VL policy, the
tiny world's training images (`cim prepare-train`'s parquet) and the CIM reward from a real `cim serve` on
loopback. The slow test trains for real on the CPU and checks what training must do; what a random-weight
policy's reward curve shows is measured and printed, not asserted (docs/training.md, "TRL"). The fast tests:
every bad input is one line and exit 2 before any weights load."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support.train_world import config, index_dir, world

ROOT = Path(__file__).resolve().parents[2]
STEPS, GROUP, PROMPTS = 24, 4, 1   # the docs/training.md run (reward curve measured, not asserted)


def _tiny_policy(out: Path, texts) -> Path:
    from e2e.full_path.models import policy   # the one import of the full-path harness's models

    return policy(out, texts)


def _cim(*args: str, cwd: Path, pre: str = "pass") -> subprocess.CompletedProcess:
    code = f"import sys; {pre}; from cim.cli import main; sys.exit(main({list(args)!r}))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]), "CIM_DEBUG": ""}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def _one_line(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cim train: ") and ": note: " not in ln]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  backend: trl\n")
    return path


def _folder(tmp_path: Path, model_type: str, processor: bool = True, template: bool = True) -> Path:
    folder = tmp_path / f"model-{model_type}-{processor}-{template}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    if processor:
        (folder / "preprocessor_config.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"} if template else {}))
    return folder


def test_a_model_that_is_no_vlm_trl_trains_is_one_line(tmp_path, params):
    proc = _cim("train", "--params", str(params), "--dry-run", f"train.trl.model_path={_folder(tmp_path, 'bert')}",
                cwd=tmp_path)
    _one_line(proc, "model_type 'bert'", "--backend verl")


def test_a_preset_trl_cannot_train_is_one_line(tmp_path, params):
    _one_line(_cim("train", "--params", str(params), "--dry-run", "--preset", "internvl2_5_8b", cwd=tmp_path),
              "train.trl.preset=internvl2_5_8b", "--backend verl")


def test_a_missing_processor_or_chat_template_is_one_line(tmp_path, params):
    no_proc = _folder(tmp_path, "qwen2_5_vl", processor=False)
    _one_line(_cim("train", "--params", str(params), "--dry-run", f"train.trl.model_path={no_proc}", cwd=tmp_path),
              "no image processor")
    no_template = _folder(tmp_path, "qwen2_5_vl", template=False)
    _one_line(_cim("train", "--params", str(params), "--dry-run", f"train.trl.model_path={no_template}",
                   cwd=tmp_path), "no chat template")


def test_trl_not_installed_is_one_line(tmp_path, params):
    # sys.modules[name] = None is how importlib sees a package that is not there (find_spec -> None)
    proc = _cim("train", "--params", str(params), "--dry-run", cwd=tmp_path, pre="sys.modules['trl'] = None")
    _one_line(proc, "pip install trl==1.16.0")


def test_a_kl_estimator_trl_lacks_is_one_line(tmp_path, params):
    _one_line(_cim("train", "--params", str(params), "--dry-run", "train.grpo.kl_type=mse", cwd=tmp_path),
              "train.grpo.kl_type=mse")


def test_dry_run_prints_the_grpo_config_from_train_grpo(tmp_path, params):
    folder = _folder(tmp_path, "qwen2_5_vl")
    proc = _cim("train", "--params", str(params), "--dry-run", f"train.trl.model_path={folder}",
                "train.grpo.group_size=6", "train.grpo.kl_coef=0.02", "train.grpo.temperature=0.9",
                "train.trl.prompts_per_step=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert (printed["num_generations"], printed["beta"], printed["temperature"]) == (6, 0.02, 0.9)
    assert printed["per_device_train_batch_size"] == 18 and printed["loss_type"] == "dapo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from cim.stages.prepare_train import prepare_train
    from cim.stages.train import train

    out = tmp_path_factory.mktemp("trl")
    w = world()
    index_dir()
    policy = _tiny_policy(out / "policy", [r["text"] for r in w["rows"]] + ["Describe this image in detail."])
    cfg = config(f"train.manifest={w['train']}", f"train.data_dir={out / 'data'}", "train.val_size=0",
                 "train.backend=trl", f"train.trl.model_path={policy}", f"train.trl.out_dir={out / 'trl'}",
                 f"train.grpo.group_size={GROUP}", f"train.trl.prompts_per_step={PROMPTS}",
                 f"train.trl.max_steps={STEPS}", "train.trl.max_completion_length=16", "train.trl.lr=1e-3",
                 "train.trl.save_steps=12", "train.trl.trace_rewards=true", f"train.service.port={_free_port()}",
                 f"tracking.uri=sqlite:///{out / 'mlflow.db'}", f"tracking.artifact_dir={out / 'artifacts'}")
    prepare_train(cfg)
    result = train(cfg)
    return cfg, policy, result, out


def _hash_file(path) -> str:
    from PIL import Image

    from cim.train.trl.reward import image_hash

    return image_hash(Image.open(path))


@pytest.mark.slow
def test_grpo_trains_the_tiny_vlm_with_the_cim_reward(trained):
    cfg, policy, result, out = trained
    w = world()
    assert result["returncode"] == 0 and result["global_step"] == STEPS
    # the reward function received every rollout, with the image the policy was shown for that id
    trace = [json.loads(line) for line in (out / "trl" / "rewards.jsonl").read_text().splitlines()]
    assert len(trace) == STEPS * PROMPTS * GROUP and result["reward_calls"] == STEPS
    files = {r["id"]: w["dir"] / r["image"] for r in w["train_rows"]}
    for row in trace:
        assert row["image_sha"] == [_hash_file(files[row["image_id"]])], row
    for start in range(0, len(trace), GROUP):   # a group: G captions of one image
        assert len({r["image_id"] for r in trace[start:start + GROUP]}) == 1
    # every step's loss is finite
    steps = [h for h in result["log_history"] if "loss" in h]
    assert [h["step"] for h in steps] == list(range(1, STEPS + 1))
    assert all(math.isfinite(h["loss"]) for h in steps)
    # the weights changed
    from safetensors.torch import load_file

    before, after = load_file(str(policy / "model.safetensors")), load_file(str(Path(result["final"]) / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert len(changed) > len(before) // 2, f"{len(changed)} of {len(before)} tensors changed"
    # the final folder reloads through the hf captioner and captions held-out images
    from cim.eval.captioners import Decoding, HFVLMCaptioner

    held_out = [w["dir"] / r["image"] for r in w["rows"] if r not in w["train_rows"]]
    cap = HFVLMCaptioner(result["final"], device="cpu", dtype="float32", batch_size=4,
                         decoding=Decoding(max_new_tokens=12))
    captions = cap.caption([str(p) for p in held_out], cfg.train.prompt)
    assert len(captions) == len(held_out) and all(isinstance(c, str) for c in captions)
    # the MLflow run holds TRL's curves and ours, one point a step, and the model
    from cim.tracking import client

    c = client(cfg)
    for key in ("rewards/cim/mean", "rewards/cim/std", "kl", "completions/mean_length", "cim_reward/grc/mean",
                "cim_reward/qir/mean", "loss"):
        assert [m.step for m in c.get_metric_history(result["run_id"], key)] == list(range(1, STEPS + 1)), key
    run = c.get_run(result["run_id"])
    assert run.data.tags["backend"] == "trl" and result["model_uri"].startswith("models:/")
    assert c.get_logged_model(result["model_uri"].split("/")[-1]).source_run_id == result["run_id"]
    curve = [h["rewards/cim/mean"] for h in steps]
    first, last = sum(curve[:8]) / 8, sum(curve[-8:]) / 8
    print(f"\nTRL GRPO, {STEPS} steps x {PROMPTS * GROUP} rollouts: reward per step "
          f"{[round(x, 3) for x in curve]}; first 8 mean {first:.3f}, last 8 mean {last:.3f}; "
          f"{len(changed)}/{len(before)} tensors changed; captions {captions[:2]}")


# -- guard terms and GDPO: several reward functions, one request per batch ---------------------------------
def test_guards_and_gdpo_give_trl_one_function_per_term_scored_in_one_request():
    from cim.reward.scorer import Scorer
    from cim.service.server import RewardService, ServerHandle, build_app
    from cim.train.trl.reward import CimReward
    from cim.train.trl.settings import grpo_config, grpo_kwargs

    from support.train_world import captions_for, scorer

    index_dir()
    items = captions_for(world()["rows"][:5]) + [{"caption": "a red red red circle circle circle red red red",
                                                  "image_id": world()["rows"][0]["id"]},
                                                 {"caption": "", "image_id": world()["rows"][1]["id"]}]
    completions = [[{"role": "assistant", "content": it["caption"]}] for it in items]
    ids = [it["image_id"] for it in items]
    plain = config()
    assert "reward_weights" not in grpo_kwargs(plain) and "multi_objective_aggregation" not in grpo_kwargs(plain)
    summed = config("reward.guards=[repetition,length]", "reward.guard.length.weight=0.5")
    gdpo = config("reward.guards=[repetition,length]", "reward.guard.length.weight=0.5", "reward.aggregate=gdpo",
                  "reward.beta=2.0")
    guarded = Scorer.from_config(summed, text_encoder=scorer().text_encoder)
    want = guarded.score(items)
    service = RewardService(guarded, window_s=0.0)
    with ServerHandle(build_app(service)) as handle:
        for cfg, names, weights in ((summed, ["cim", "guard_repetition", "guard_length"], [1.0, 1.0, 0.5]),
                                    (gdpo, ["grc", "qir", "guard_repetition", "guard_length"], [1.0, 2.0, 1.0, 0.5])):
            args = grpo_config(cfg)
            assert args.reward_weights == weights
            assert args.multi_objective_aggregation == ("normalize_then_sum" if cfg is gdpo else "sum_then_normalize")
            funcs = CimReward.functions(cfg, handle.url)
            assert [f.__name__ for f in funcs] == names
            logged = {}
            before = service.batcher.stats.batches
            values = [f(prompts=[None] * len(items), completions=completions, image_id=ids,
                        log_metric=logged.__setitem__) for f in funcs]          # as TRL calls them, in order
            assert service.batcher.stats.batches - before == 1 and funcs[0].calls == 1   # one request a batch
            for i, w in enumerate(want[:-1]):
                if cfg is summed:       # TRL's weighted sum of the functions is the composed score
                    assert sum(wt * v[i] for wt, v in zip(weights, values)) == pytest.approx(w["score"], abs=1e-6)
                else:
                    assert [v[i] for v in values] == pytest.approx(
                        [w["grc"], w["qir"], w["guards"]["repetition"], w["guards"]["length"]], abs=1e-6)
            assert values[names.index("guard_repetition")][5] < 0                   # the repeated caption
            assert [v[-1] for v in values[1:]] == [0.0] * (len(funcs) - 1)         # a failed rollout: terms 0
            assert logged["cim_reward/guard_length/mean"] == pytest.approx(sum(values[-1]) / len(items))
            assert "cim_reward/upsilon/mean" in logged


@pytest.mark.slow
def test_grpo_with_gdpo_and_guards_trains_a_few_steps(tmp_path):
    """TRL's decoupled normalisation on the reward's terms, for real: finite losses, each term's curve, one
    reward request per step."""
    from cim.stages.prepare_train import prepare_train
    from cim.stages.train import train

    w = world()
    index_dir()
    policy = _tiny_policy(tmp_path / "policy", [r["text"] for r in w["rows"]] + ["Describe this image in detail."])
    steps = 2
    cfg = config(f"train.manifest={w['train']}", f"train.data_dir={tmp_path / 'data'}", "train.val_size=0",
                 "train.backend=trl", f"train.trl.model_path={policy}", f"train.trl.out_dir={tmp_path / 'trl'}",
                 f"train.grpo.group_size={GROUP}", f"train.trl.prompts_per_step={PROMPTS}",
                 f"train.trl.max_steps={steps}", "train.trl.max_completion_length=8", "train.trl.save_steps=100",
                 f"train.service.port={_free_port()}", "reward.guards=[repetition,length]", "reward.aggregate=gdpo",
                 f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_dir={tmp_path / 'artifacts'}")
    prepare_train(cfg)
    result = train(cfg)
    assert result["returncode"] == 0 and result["global_step"] == steps and result["reward_calls"] == steps
    logs = [h for h in result["log_history"] if "loss" in h]
    assert len(logs) == steps and all(math.isfinite(h["loss"]) for h in logs)
    for key in ("rewards/grc/mean", "rewards/qir/mean", "rewards/guard_repetition/mean",
                "rewards/guard_length/mean", "cim_reward/guard_repetition/mean", "cim_reward/upsilon/mean"):
        assert all(math.isfinite(h[key]) for h in logs), key
