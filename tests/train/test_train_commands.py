"""`cim prepare-train`, `cim train --backend verl --dry-run`, the Prefect deployment file."""
import json

import pyarrow.parquet as pq
import pytest

from support.cli_args import parse_command_args
from support.train_world import params_file, world




def test_prepare_train_writes_verl_parquet(tmp_path, capsys):
    from cim.cli import prepare_train as prepare_command

    rc = prepare_command.run(parse_command_args(prepare_command, ["--params", str(params_file()), "--out", str(tmp_path)]))
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    train = pq.read_table(info["train_files"]).to_pylist()
    val = pq.read_table(info["val_files"]).to_pylist()
    assert len(train) == len(world()["train_rows"]) and len(val) == 3     # every row trains; val is a sample
    assert {r["extra_info"]["image_id"] for r in val} <= {r["extra_info"]["image_id"] for r in train}
    row = train[0]
    assert row["data_source"] == "cim_caption" and row["ability"] == "caption"
    assert row["prompt"] == [{"role": "user", "content": "<image>Describe this image in detail."}]
    assert row["images"][0]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    assert row["reward_model"]["ground_truth"] == row["extra_info"]["image_id"]
    assert {r["extra_info"]["image_id"] for r in train} == {r["id"] for r in world()["train_rows"]}
    corpus_ids = [r["id"] for r in world()["rows"]]          # index.manifest: the gallery
    assert all(r["extra_info"]["index"] == corpus_ids.index(r["extra_info"]["image_id"]) for r in train)
    assert {r["extra_info"]["split"] for r in val} == {"val"}


def test_prepare_train_rejects_a_prompt_without_one_image_slot(tmp_path):
    from cim.train.verl.data import to_verl_rows

    with pytest.raises(ValueError):
        to_verl_rows([], "<image><image>two images", "train")


def test_train_verl_dry_run_prints_the_command(capsys, tmp_path):
    from cim.cli import train as commands

    argv = ["--params", str(params_file()), "--backend", "verl", "--dry-run", "--preset", "qwen2_vl_7b",
            "--setting", "base", f"train.verl.checkpoint_dir={tmp_path}/ckpt"]
    assert commands.run(parse_command_args(commands, argv)) == 0
    out = capsys.readouterr().out
    assert "-m verl.trainer.main_ppo" in out and "MLFLOW_RUN_ID=" in out
    assert "actor_rollout_ref.model.path=Qwen/Qwen2-VL-7B-Instruct" in out
    assert "reward.custom_reward_function.path=pkg://cim.train.verl.reward" in out
    assert "trainer.logger=[console,mlflow]" in out
    assert f"trainer.default_local_dir={tmp_path}/ckpt" in out
    assert not (tmp_path / "ckpt").exists()          # a dry run changes nothing


def test_train_verl_dry_run_with_gdpo_shows_the_estimator_and_its_terms(capsys, tmp_path):
    from cim.cli import train as commands

    argv = ["--params", str(params_file()), "--backend", "verl", "--dry-run", f"train.verl.checkpoint_dir={tmp_path}",
            "reward.aggregate=gdpo", "reward.guards=[repetition]"]
    assert commands.run(parse_command_args(commands, argv)) == 0
    out = capsys.readouterr().out
    assert "algorithm.adv_estimator=gdpo" in out and "algorithm.adv_estimator=grpo" not in out
    assert "+algorithm.gdpo_reward_keys=[grc,qir,guard_repetition]" in out
    assert "+algorithm.gdpo_reward_weights=[1.0,1.0,1.0]" in out      # beta (1.0), the guard (1.0)


def test_train_verl_on_a_ray_cluster_uses_ray_job_submit(capsys):
    from cim.cli import train as commands

    argv = ["--params", str(params_file()), "--backend", "verl", "--dry-run",
            "train.verl.ray_address=http://head:8265", "train.verl.nnodes=4", "train.service.url=http://head:8750"]
    assert commands.run(parse_command_args(commands, argv)) == 0
    out = capsys.readouterr().out
    assert out.count("ray job submit --address http://head:8265") == 1
    assert "-- python -m verl.trainer.main_ppo" in out and "trainer.nnodes=4" in out


def test_train_verl_without_data_says_what_to_run(tmp_path, capsys):
    from cim.cli import main

    argv = ["train", "--params", str(params_file()), "--backend", "verl", f"train.data_dir={tmp_path}/none",
            f"train.verl.checkpoint_dir={tmp_path}/ckpt"]
    assert main(argv) == 2
    assert "cim prepare-train" in capsys.readouterr().err


def test_sft_setting_needs_a_checkpoint():
    from cim.cli import train as commands
    from cim.presets import PresetError

    argv = ["--params", str(params_file()), "--backend", "verl", "--dry-run", "--setting", "sft"]
    with pytest.raises(PresetError, match="sft_checkpoint"):
        commands.run(parse_command_args(commands, argv))


def test_prefect_deployments_point_at_a_flow_that_takes_their_parameters():
    from pathlib import Path

    import yaml
    from prefect.flows import load_flow_from_entrypoint

    root = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((root / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"cim-train-grpo-verl", "cim-train-grpo-local"} <= names
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(root / dep["entrypoint"]))
        flow.validate_parameters(dep.get("parameters", {}))
        assert dep["work_pool"]["name"]
    gpu = next(d for d in spec["deployments"] if d["name"] == "cim-train-grpo-verl")
    assert gpu["work_pool"]["name"] == "cim-gpu" and gpu["parameters"]["backend"] == "verl"
