"""The CPU GRPO backend on the tiny world: SFT -> GRPO with the real scorer, MLflow per step, checkpoints;
a real SIGKILL in either phase resumes into the same MLflow run and ends with the bytes of an uninterrupted
run; the ground-truth recall used for evaluation. (verl's GRPO advantage = the paper's Eq. 4:
tests/reward/test_reward_equations.py.)"""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from support.train_world import config, index_dir, params_file, root, scorer

from cim.eval.world_truth import scene_recall

SCENE = {"background": "grass",
         "objects": [{"shape": "circle", "colour": "red", "size": "large", "texture": "striped"},
                     {"shape": "square", "colour": "blue", "size": "small", "texture": "solid"}],
         "relations": [{"subject": 0, "relation": "left of", "object": 1}]}
KEYS = ("train/reward_mean", "train/grc", "train/qir", "train/kl", "train/caption_len", "train/distinct_2",
        "train/source_retrieved", "eval/reward", "eval/qir", "sft/loss")


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


def _overrides(out, *extra):
    w = root() / "world"
    return [f"train.local.out_dir={out}", f"train.local.report_dir={out}-reports", "train.local.sft_steps=30",
            "train.local.sft_batch=8", "train.local.d_model=32", "train.local.n_layers=1", "train.local.n_heads=2",
            "train.local.prompts_per_step=3", "train.grpo.group_size=3", "train.local.max_new_tokens=12",
            "train.local.save_every=1", "train.local.eval_every=2", "train.local.n_eval=4",
            f"train.local.eval_manifest={w / 'train.jsonl'}", "train.local.threads=1", *extra]


def _local_cfg(out, *extra):
    return config(*_overrides(out, *extra))


def _client(cfg):
    from cim.tracking import client

    return client(cfg)


def _metrics(cfg, run_id):
    c = _client(cfg)
    return {k: [(m.step, m.value) for m in sorted(c.get_metric_history(run_id, k), key=lambda m: m.step)]
            for k in KEYS}


def _runs_of(cfg, out):
    """Every MLflow run of the training in ``out`` (any status), oldest first."""
    from cim.tracking import configure
    from cim.train.local.run import RUN_KEY_TAG, checkpoint_key

    runs = _client(cfg).search_runs([configure(cfg)], f"tags.`{RUN_KEY_TAG}` = '{checkpoint_key(out)}'")
    return sorted(runs, key=lambda r: r.info.start_time)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_no_mlflow_trains_and_writes_the_same_files_without_a_run(tmp_path, capsys):
    """`cim train --backend local --no-mlflow`: the checkpoints and reports, and no MLflow run of it."""
    from cim.train.local.run import run_local

    index_dir()
    out = tmp_path / "local"
    cfg = _local_cfg(out, "train.local.grpo_steps=1")
    assert run_local(cfg, scorer=scorer(), progress=False, track=False) == 0
    assert "MLflow run" not in capsys.readouterr().err
    assert (out / "grpo_00001" / "state.pt").exists() and (out / "summary.json").exists()
    assert (tmp_path / "local-reports" / "summary.json").exists()
    assert _runs_of(cfg, out) == []


def test_local_grpo_runs_logs_checkpoints_and_resumes(tmp_path, capsys):
    from cim.train.local.run import run_local

    index_dir()
    out = tmp_path / "local"
    cfg = _local_cfg(out, "train.local.grpo_steps=2")
    assert run_local(cfg, scorer=scorer(), progress=False) == 0
    first = json.loads((out / "summary.json").read_text())
    assert "run_id" not in first                                 # the run id lives in MLflow, not in DVC outputs
    assert (out / "sft_final" / "state.pt").exists() and (out / "grpo_00002" / "state.pt").exists()
    assert (out / "curves.png").stat().st_size > 0
    assert (tmp_path / "local-reports" / "summary.json").read_bytes() == (out / "summary.json").read_bytes()
    assert json.loads((out / "latest.json").read_text()) == {"checkpoint": "grpo_00002", "phase": "grpo",
                                                             "step": 2}
    [run] = _runs_of(cfg, out)
    assert run.info.status == "FINISHED"
    m = _metrics(cfg, run.info.run_id)
    assert [s for s, _ in m["train/reward_mean"]] == [1, 2]
    for key in KEYS:
        assert m[key], key
    logged = _client(cfg).get_run(run.info.run_id).data.metrics      # no guards: no guard metrics
    assert not [k for k in logged if k.startswith(("train/guard_", "train/upsilon"))]
    assert [s for s, _ in m["eval/reward"]] == [0, 2]            # the SFT start and step 2
    assert first["sft_eval"]["eval/reward"] == m["eval/reward"][0][1]
    assert first["final_eval"]["eval/reward"] == m["eval/reward"][1][1]

    # a longer run in the same folder resumes after step 2 instead of starting again; its (new) MLflow run
    # holds the whole history, not only the new steps
    capsys.readouterr()
    cfg4 = _local_cfg(out, "train.local.grpo_steps=4")
    assert run_local(cfg4, scorer=scorer(), progress=False) == 0
    assert "resuming from grpo step 2" in capsys.readouterr().err
    second = json.loads((out / "summary.json").read_text())
    assert second["sft_eval"] == first["sft_eval"]
    old, new = _runs_of(cfg4, out)
    assert old.info.run_id == run.info.run_id and new.data.tags["resumed"] == "true"
    assert new.data.tags["resume.from"] == "grpo step 2" and new.data.tags["resume.same_run"] == "false"
    m2 = _metrics(cfg4, new.info.run_id)
    assert [s for s, _ in m2["train/reward_mean"]] == [1, 2, 3, 4] and m2["sft/loss"] == m["sft/loss"]
    assert m2["train/reward_mean"][:2] == m["train/reward_mean"]

    # another configuration in the same folder is refused, not silently mixed
    with pytest.raises(RuntimeError, match="different configuration"):
        run_local(_local_cfg(out, "train.local.grpo_steps=4", "train.local.lr=0.5"), scorer=scorer())


KILLER = textwrap.dedent("""
    # `cim train` that SIGKILLs itself right after the history records the given (metric, step): a real kill
    # at a chosen point (no cleanup, no atexit, the MLflow run left RUNNING)
    import os, signal, sys
    from cim.train.local import history

    key, at = sys.argv[1], int(sys.argv[2])
    add = history.RunHistory.add

    def add_then_die(self, step, metrics, timing=None):
        add(self, step, metrics, timing)
        if key in metrics and step == at:
            os.kill(os.getpid(), signal.SIGKILL)

    history.RunHistory.add = add_then_die
    from cim.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def _train_killed_at(tmp_path, key, step, overrides):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    argv = [sys.executable, str(script), key, str(step), "train", "--backend", "local", "--params",
            str(params_file()), *overrides]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    return proc


@pytest.mark.slow
def test_sigkilled_runs_resume_into_one_mlflow_run_with_the_bytes_of_an_uninterrupted_run(tmp_path):
    from cim.train.local.run import run_local

    index_dir()
    steps = "train.local.grpo_steps=5"
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "killed"
    ref_cfg = _local_cfg(ref_out, steps, "train.local.save_every=2")
    assert run_local(ref_cfg, progress=False) == 0

    # 1. killed in SFT before its first checkpoint (save_every 10: the first SFT checkpoint would be step 50)
    p = _train_killed_at(tmp_path, "sft/loss", 20, _overrides(out, steps, "train.local.save_every=10"))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not (out / "latest.json").exists()
    [dead] = _runs_of(ref_cfg, out)
    assert dead.info.status == "RUNNING"                        # what a SIGKILL leaves behind

    # 2. starts afresh (that run is ended as KILLED), killed in SFT after the checkpoints of steps 10..15
    p = _train_killed_at(tmp_path, "sft/loss", 20, _overrides(out, steps, "train.local.save_every=2"))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == "sft_00010"
    first, second = _runs_of(ref_cfg, out)
    assert first.info.status == "KILLED" and "died" in first.data.tags["cim.ended"]
    assert second.info.status == "RUNNING"

    # 3. resumes SFT from step 10 into the same run; killed in GRPO after step 3 (checkpoint: step 2)
    p = _train_killed_at(tmp_path, "train/reward_mean", 3, _overrides(out, steps, "train.local.save_every=2"))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert "resuming from sft step 10" in p.stderr
    assert "SFT warm-up" in p.stderr and "GRPO" in p.stderr              # progress bars of both phases
    assert "faiss.loader" not in p.stderr                                 # the stage log at INFO stays quiet
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == "grpo_00002"

    # 4. resumes GRPO from step 2 into the same run and finishes
    p = _train_killed_at(tmp_path, "never", 0, _overrides(out, steps, "train.local.save_every=2"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resuming from grpo step 2" in p.stderr

    # the same bytes as the uninterrupted run: checkpoints (torch.save), history, samples, summary, curves
    assert _files(out) == _files(ref_out)
    assert _files(tmp_path / "killed-reports") == _files(tmp_path / "uninterrupted-reports")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sft_eval"] and summary["final_eval"]

    # one MLflow run holds the resumed training, every step exactly once, equal to the uninterrupted run's
    first, resumed = _runs_of(ref_cfg, out)
    assert first.info.status == "KILLED"
    assert resumed.info.status == "FINISHED" and resumed.info.run_id == second.info.run_id
    assert resumed.data.tags["resumed"] == "true" and resumed.data.tags["resume.count"] == "2"
    assert resumed.data.tags["resume.same_run"] == "true" and resumed.data.tags["resume.from"] == "grpo step 2"
    [ref_run] = _runs_of(ref_cfg, ref_out)
    got, want = _metrics(ref_cfg, resumed.info.run_id), _metrics(ref_cfg, ref_run.info.run_id)
    assert got == want
    assert [s for s, _ in got["train/reward_mean"]] == [1, 2, 3, 4, 5]
    assert [s for s, _ in got["sft/loss"]] == [20, 30]


def test_local_dry_run_prints_the_plan(capsys, tmp_path):
    from cim.train.local.run import run_local

    assert run_local(_local_cfg(tmp_path / "x", "train.local.grpo_steps=7"), dry_run=True) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["grpo"]["steps"] == 7 and not (tmp_path / "x").exists()


def test_curve_titles_say_what_was_optimised():
    from cim.train.local.curves import optimised_reward

    assert optimised_reward("both", 1.0) == "reward Υ = GRC + 1·QIR"
    assert optimised_reward("both", 0.5) == "reward Υ = GRC + 0.5·QIR"
    assert optimised_reward("grc", 1.0) == "reward = GRC only (Eq. 1)" and "QIR" not in optimised_reward("grc", 1.0)
    assert optimised_reward("qir", 1.0) == "reward = QIR only (Eq. 2)" and "GRC" not in optimised_reward("qir", 1.0)


# -- reward.aggregate=gdpo: verl's decoupled advantage on the reward's terms ---------------------------------
def _result(grc, qir, guards, error=None):
    return {"score": None if error else grc + qir, "upsilon": None if error else grc + qir, "grc": grc, "qir": qir,
            "guards": {} if error else guards, "error": error}


def _by_hand(values, weights, groups, lengths):
    """GDPO in numpy: each term z-scored in its group (unbiased std, +1e-6), weighted sum, then whitened over
    every response token (unbiased variance), as verl 0.9.1 defines it."""
    import numpy as np

    total = np.zeros(len(groups))
    for vals, w in zip(values, weights):
        vals = np.asarray(vals, dtype=np.float64)
        for g in set(groups):
            at = [i for i, x in enumerate(groups) if x == g]
            total[at] += w * (vals[at] - vals[at].mean()) / (vals[at].std(ddof=1) + 1e-6)
    tokens = np.repeat(total, lengths)
    return (total - tokens.mean()) / np.sqrt(tokens.var(ddof=1) + 1e-8)


def test_gdpo_advantage_normalises_each_term_in_its_group_and_weights_them():
    import numpy as np
    import torch
    from verl.trainer.ppo import core_algos

    from cim.train.local.trainer import gdpo_advantages, guard_metrics

    cfg = config("reward.guards=[repetition]", "reward.guard.repetition.weight=0.5", "reward.aggregate=gdpo",
                 "reward.beta=2.0")
    scored = [_result(0.9, 0.1, {"repetition": 0.0}), _result(0.2, 0.3, {"repetition": -0.5}),
              _result(0.4, 0.6, {"repetition": -0.25}), _result(0.0, 0.0, {}, error="empty caption"),
              _result(0.7, 0.2, {"repetition": 0.0}), _result(0.1, 0.9, {"repetition": -1.0})]
    lengths = [3, 5, 2, 1, 4, 5]
    mask = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths])
    uids = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    token_rewards = torch.zeros_like(mask)          # GDPO reads the terms, not the composed reward
    adv = gdpo_advantages(core_algos, cfg.reward, scored, token_rewards, mask, uids)
    assert torch.isfinite(adv).all() and (adv[mask == 0] == 0).all()
    per_row = adv[:, 0]
    assert torch.equal(adv, per_row[:, None] * mask)                     # one value over each response
    failed = lambda vals: [0.0 if s["error"] else v for s, v in zip(scored, vals)]   # noqa: E731
    want = _by_hand([failed([s["grc"] for s in scored]), failed([s["qir"] for s in scored]),
                     [s["guards"].get("repetition", 0.0) for s in scored]], [1.0, 2.0, 0.5], list(uids), lengths)
    assert per_row.tolist() == pytest.approx(want.tolist(), abs=1e-4)
    # the metrics: Υ and each guard, over the scored rollouts; none without guards
    ok = [s for s in scored if not s["error"]]
    m = guard_metrics(cfg.reward, ok)
    assert m == pytest.approx({"train/upsilon": np.mean([s["grc"] + s["qir"] for s in ok]),
                               "train/guard_repetition": np.mean([s["guards"]["repetition"] for s in ok])})
    assert guard_metrics(config().reward, ok) == {}


def test_local_grpo_with_gdpo_and_guards_trains_and_logs_the_guards(tmp_path):
    """`cim train --backend local reward.aggregate=gdpo reward.guards=[...]` on the tiny world: a few GRPO steps,
    finite losses, each guard's mean and Υ per step in MLflow (the default run logs neither)."""
    from cim.reward.scorer import Scorer
    from cim.train.local.run import run_local

    index_dir()
    out = tmp_path / "local"
    cfg = _local_cfg(out, "train.local.grpo_steps=2", "reward.guards=[repetition,length,fluency]",
                     "reward.aggregate=gdpo")
    guarded = Scorer.from_config(cfg, text_encoder=scorer().text_encoder)
    assert run_local(cfg, scorer=guarded, progress=False) == 0
    [run] = _runs_of(cfg, out)
    c = _client(cfg)
    logged = set(c.get_run(run.info.run_id).data.metrics)
    guards = {"train/upsilon", "train/guard_repetition", "train/guard_length", "train/guard_fluency"}
    assert guards <= logged
    for key in guards | {"train/pg_loss", "train/grad_norm", "train/reward_mean"}:
        history = c.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2] and all(math.isfinite(m.value) for m in history), key
    for key in ("train/guard_repetition", "train/guard_length", "train/guard_fluency"):
        assert all(-1.0 <= m.value <= 0.0 for m in c.get_metric_history(run.info.run_id, key))
