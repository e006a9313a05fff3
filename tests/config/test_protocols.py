"""Named protocols (configs/protocols/*.yaml): loading, precedence, records, and the `official` verl
command against the released Qwen2.5-VL-7B training script, key by key."""
import os
import re
import shlex
from pathlib import Path

import pytest

from support.cli_args import parse_command_args
from support.train_world import params_file

from cim.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]

# The released Qwen2.5-VL-7B training script as read from the authors' release (the project's reference
# notes, "Training as released"): verl key -> value.
RELEASED_QWEN2_5_VL_7B = {
    "algorithm.adv_estimator": "grpo",
    "actor_rollout_ref.model.path": "Qwen/Qwen2.5-VL-7B-Instruct",
    "data.train_batch_size": 256,
    "actor_rollout_ref.rollout.n": 5,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 64,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 8,
    "actor_rollout_ref.actor.optim.optimizer": "Adam",
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "trainer.total_epochs": 2,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "algorithm.use_kl_in_reward": False,
    "data.max_prompt_length": 1024,
    "data.max_response_length": 1024,
    "actor_rollout_ref.rollout.name": "vllm",
    "trainer.nnodes": 1,
    "trainer.n_gpus_per_node": 8,
    "trainer.save_freq": 6,
}
RELEASED_REWARD = {"top_k": 3, "exclude_source": False, "beta": 1.0, "decay": 0.5}




def _printed_overrides(out: str) -> list[str]:
    """The overrides of the printed ``python -m verl.trainer.main_ppo`` command, one per line."""
    command = out[out.index("verl.trainer.main_ppo"):].replace("\\\n", " ")
    return shlex.split(command)[1:]


def _compose(overrides):
    import verl
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"),
                               version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def test_official_dry_run_matches_the_released_script_key_by_key(capsys, tmp_path):
    from omegaconf import OmegaConf
    from verl.trainer.main_ppo import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from cim.cli import train as commands
    from cim.train.verl.plan import snapshot_params

    argv = ["--params", str(params_file()), "--backend", "verl", "--preset", "qwen2_5_vl_7b", "--protocol",
            "official", "--dry-run", f"train.verl.checkpoint_dir={tmp_path}/ckpt", f"train.data_dir={tmp_path}/d"]
    assert commands.run(parse_command_args(commands, argv)) == 0
    out = capsys.readouterr().out
    assert "kl_loss_coef=0.001" in out and "top_k=3" in out and "# protocol: official;" in out
    overrides = _printed_overrides(out)
    c = _compose(overrides)
    validate_config(c, use_reference_policy=need_reference_policy(c), use_critic=need_critic(c))
    mismatched = {key: (OmegaConf.select(c, key), want) for key, want in RELEASED_QWEN2_5_VL_7B.items()
                  if OmegaConf.select(c, key) != want}
    assert mismatched == {}
    # no validation during training; train and val are the same parquet
    assert c.trainer.test_freq <= 0 and c.trainer.val_before_train is False
    assert c.data.val_files == c.data.train_files == f"{tmp_path}/d/train.parquet"
    # the reward: a service by default, and its settings (top_k 3) in the params it loads
    assert c.reward.custom_reward_function.reward_kwargs.service_url == "http://127.0.0.1:8750"
    snap = snapshot_params(load_config(params_file(), ["protocol=official"]), tmp_path / "snap.yaml")
    assert snap.read_text().startswith("# resolved config of protocol 'official'")
    resolved = load_config(snap)
    assert {k: getattr(resolved.reward, k) for k in RELEASED_REWARD} == RELEASED_REWARD
    assert resolved.protocol == ""          # already applied: loading the snapshot applies nothing again
    assert not (tmp_path / "ckpt").exists()


def test_an_override_wins_over_the_protocol_and_is_recorded_as_a_deviation(tmp_path):
    from cim.protocols import describe, label, tags

    cfg = load_config(None, ["protocol=official", "reward.top_k=5"])
    assert cfg.reward.top_k == 5 and cfg.train.grpo.kl_coef == 0.001
    d = describe(cfg)
    assert d["name"] == "official" and d["deviations"] == {"reward.top_k": {"protocol": 3, "used": 5}}
    assert label(cfg) == "official (deviations: reward.top_k=5)"
    assert tags(cfg)["protocol"] == "official" and tags(cfg)["protocol.deviations"] == "reward.top_k"
    # a protocol named in the params file, overridden by name on the command line
    path = tmp_path / "params.yaml"
    path.write_text("protocol: paper\nreward: {top_k: 9}\n")
    assert load_config(path).reward.top_k == 5                 # the protocol is applied over the file
    assert load_config(path, ["protocol=official"]).reward.top_k == 3
    assert describe(load_config(None)) == {"name": "none"}


def test_the_two_protocols_differ_where_the_release_differs_from_the_paper():
    paper, official = load_config(None, ["protocol=paper"]), load_config(None, ["protocol=official"])
    assert (paper.reward.top_k, official.reward.top_k) == (5, 3)
    assert (paper.train.grpo.kl_coef, official.train.grpo.kl_coef) == (0.01, 0.001)
    assert (paper.train.verl.max_response_length, official.train.verl.max_response_length) == (512, 1024)
    assert (paper.train.verl.save_freq, official.train.verl.save_freq) == (50, 6)
    assert official.eval.prompt.startswith("Caption this image as accurately as possible")
    assert official.eval.captioner.max_new_tokens == 1024 and official.eval.judge.model == "Qwen/Qwen3-8B"
    for cfg in (paper, official):   # what both take from the paper's §4.1
        assert cfg.encoders.text.model == "all-mpnet-base-v2" and cfg.encoders.image.model == "ViT-H-14"
        assert cfg.train.verl.lr == 1e-6 and cfg.train.verl.train_batch_size == 256
        assert list(cfg.eval.benchmarks) == ["cocoln500", "docci500"]


def test_unknown_protocol_and_bad_protocol_keys_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"no protocol 'papr' \(known: guarded, official, paper"):
        load_config(None, ["protocol=papr"])
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nparams: {reward.top_kk: 3}\n")
    with pytest.raises(ConfigError, match=r"protocol .*mine\.yaml.*reward\.top_kk"):
        load_config(None, [f"protocol={bad}"])
    bad.write_text("name: mine\nparams: {reward.top_k: three}\n")
    with pytest.raises(ConfigError, match=r"reward\.top_k"):
        load_config(None, [f"protocol={bad}"])


def test_every_protocol_value_has_a_source_and_a_row_in_docs():
    from cim.protocols import load_protocol, names

    doc = (ROOT / "docs" / "protocols.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", doc, re.M)}
    for name in names():
        p = load_protocol(name)
        keys = set(p.params) | {f"verl.{k}" for k in p.verl}
        assert keys <= set(p.sources), f"{name}: no source for {sorted(keys - set(p.sources))}"
        assert keys <= rows, f"docs/protocols.md lacks rows for {sorted(keys - rows)}"


def test_protocol_flag_reaches_the_reward_verify_and_evaluate_commands():
    from cim.cli import evaluate, overrides_of, verify

    for module in (evaluate, verify):
        args = parse_command_args(module, ["--protocol", "official", "reward.top_k=4"])
        cfg = load_config(None, overrides_of(args))
        assert cfg.protocol == "official" and cfg.reward.top_k == 4 and cfg.reward.exclude_source is False
