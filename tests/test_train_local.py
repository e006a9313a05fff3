"""The CPU GRPO backend on the tiny world: SFT -> GRPO with the real scorer, MLflow per step, checkpoints,
resume; verl's GRPO advantage equals the paper's Eq. 4; the ground-truth recall used for evaluation."""
import json
import math

import numpy as np
import pytest
import torch

from test_train_support import config, index_dir, root, scorer

from cim.train.world_recall import scene_recall

SCENE = {"background": "grass",
         "objects": [{"shape": "circle", "colour": "red", "size": "large", "texture": "striped"},
                     {"shape": "square", "colour": "blue", "size": "small", "texture": "solid"}],
         "relations": [{"subject": 0, "relation": "left of", "object": 1}]}


def test_scene_recall_on_hand_written_captions():
    full = scene_recall("A large red striped circle is to the left of a small blue solid square on grass.", SCENE)
    assert full == {"object_recall": 1.0, "attribute_recall": 1.0, "attribute_precision": 1.0,
                    "relation_recall": 1.0}
    inverse = scene_recall("A little blue square is right of a big red disc with stripes.", SCENE)
    assert inverse["relation_recall"] == 1.0 and inverse["attribute_recall"] == pytest.approx(5 / 6)
    vague = scene_recall("Two shapes on grass.", SCENE)
    assert vague["object_recall"] == 0.0 and vague["attribute_recall"] == 0.0
    wrong = scene_recall("A green circle above a blue square.", SCENE)
    assert wrong["relation_recall"] == 0.0 and wrong["attribute_precision"] == 0.5
    assert math.isnan(scene_recall("a circle", {"objects": SCENE["objects"][:1], "relations": []})["relation_recall"])


def test_verl_grpo_advantage_is_the_papers_eq4():
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    from cim.reward.equations import group_advantages

    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(4 * 5, generator=g) * 3
    mask = torch.ones(20, 7)
    token = torch.zeros(20, 7)
    token[:, -1] = rewards
    uids = np.array([f"p{i // 5}" for i in range(20)], dtype=object)
    adv, _ = compute_grpo_outcome_advantage(token, mask, uids)
    assert adv[:, 0].tolist() == pytest.approx(group_advantages(rewards, 5).tolist(), abs=1e-5)


def _local_cfg(out, *extra):
    w = root() / "world"
    return config(f"train.local.out_dir={out}", "train.local.sft_steps=30", "train.local.sft_batch=8",
                  "train.local.d_model=32", "train.local.n_layers=1", "train.local.n_heads=2",
                  "train.local.prompts_per_step=3", "train.local.group_size=3", "train.local.max_new_tokens=12",
                  "train.local.save_every=1", "train.local.eval_every=2", "train.local.n_eval=4",
                  f"train.local.eval_manifest={w / 'train.jsonl'}", "train.local.threads=1", *extra)


def _metrics(cfg, run_id):
    import mlflow

    from cim.tracking import tracking_uri

    client = mlflow.tracking.MlflowClient(tracking_uri(cfg))
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
            for k in ("train/reward_mean", "train/grc", "train/qir", "train/kl", "train/caption_len",
                      "train/distinct_2", "train/source_retrieved", "eval/reward", "sft/loss")}


def test_local_grpo_runs_logs_checkpoints_and_resumes(tmp_path, capsys):
    from cim.train.local import run_local

    index_dir()
    out = tmp_path / "local"
    cfg = _local_cfg(out, "train.local.grpo_steps=2")
    assert run_local(cfg, scorer=scorer()) == 0
    first = json.loads((out / "summary.json").read_text())
    assert (out / "sft_final" / "state.pt").exists() and (out / "grpo_00002" / "state.pt").exists()
    assert (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "latest.json").read_text()) == {"checkpoint": "grpo_00002", "phase": "grpo",
                                                             "step": 2}
    m = _metrics(cfg, first["run_id"])
    assert [s for s, _ in m["train/reward_mean"]] == [1, 2]
    for key in ("train/grc", "train/qir", "train/kl", "train/caption_len", "train/distinct_2",
                "train/source_retrieved", "sft/loss"):
        assert m[key], key
    assert [s for s, _ in m["eval/reward"]] == [0, 2]            # the SFT start and step 2
    assert "eval/reward" in first["sft_eval"]

    # a longer run in the same folder resumes after step 2 instead of starting again
    capsys.readouterr()
    cfg4 = _local_cfg(out, "train.local.grpo_steps=4")
    assert run_local(cfg4, scorer=scorer()) == 0
    assert "resuming from grpo step 2" in capsys.readouterr().err
    second = json.loads((out / "summary.json").read_text())
    m2 = _metrics(cfg4, second["run_id"])
    assert [s for s, _ in m2["train/reward_mean"]] == [3, 4] and not m2["sft/loss"]

    # another configuration in the same folder is refused, not silently mixed
    with pytest.raises(RuntimeError, match="different configuration"):
        run_local(_local_cfg(out, "train.local.grpo_steps=4", "train.local.lr=0.5"), scorer=scorer())


def test_local_dry_run_prints_the_plan(capsys, tmp_path):
    from cim.train.local import run_local

    assert run_local(_local_cfg(tmp_path / "x", "train.local.grpo_steps=7"), dry_run=True) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["grpo"]["steps"] == 7 and not (tmp_path / "x").exists()
