"""The comparison's run plan (cim.pipeline.plan) is the one place its steps are written: dvc.yaml's stages and
matrix are its steps (names, commands, outputs, the outputs each reads), for params.yaml's variants and for a
variant added there; `cim train --variant`, `cim compare` and the ablation take their steps from it; the
runner binds a step to the results of the steps it needs."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPARISON = ("sft", "train@", "caption", "compare", "publish")     # dvc.yaml's stages of the comparison


def _dvc_stages(root: Path) -> dict:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {st.name: {"cmd": st.cmd, "deps": [d.def_path for d in st.deps],
                                "outs": [o.def_path for o in st.outs]} for st in repo.index.stages}


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _a_checkout_with(tmp_path: Path, added: dict | None) -> Path:
    """dvc.yaml and params.yaml in a DVC repo of their own, ``added`` to params.yaml's pipeline.variants."""
    if added is None:
        return REPO
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pipeline"]["variants"].update(added)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True, capture_output=True)
    return root


@pytest.mark.parametrize("added", [None, {"cim-b2": {"reward.mode": "both", "reward.beta": 2.0}}],
                         ids=["params.yaml", "a-variant-added"])
def test_dvc_stages_are_the_run_plan(added, tmp_path):
    from cim.config import load_config
    from cim.pipeline.plan import plan

    root = _a_checkout_with(tmp_path, added)
    cfg = load_config(root / "params.yaml")
    steps = plan(cfg)
    stages = _dvc_stages(root)
    ours = {n: st for n, st in stages.items() if n.startswith(COMPARISON)}
    assert sorted(s.name for s in steps) == sorted(ours)        # the same steps (DVC orders them by deps)
    by_name = {s.name: s for s in steps}
    for name, st in ours.items():
        step = by_name[name]
        assert st["cmd"] == step.cmd, name
        # every output DVC tracks lies in one the step writes, and every one it writes is tracked
        assert all(any(_under(o, out) for out in step.outs) for o in st["outs"]), (name, st["outs"], step.outs)
        assert all(any(_under(o, out) for o in st["outs"]) for out in step.outs), (name, st["outs"], step.outs)
        # the stage depends on what each step it needs writes (so DVC orders them as the plan does)
        for need in step.needs:
            out = by_name[need].outs[0]
            assert any(_under(out, d) or _under(d, out) for d in st["deps"]), (name, need)
    if added is not None:
        assert "train@cim-b2-2" in ours and ours["caption@cim-b2-0"]["cmd"] == ("cim caption --captioner cim-b2-s0 --out reports/captions/cim-b2-s0/captions.jsonl")


def test_the_plan_orders_steps_after_what_they_need_and_names_known_stages():
    from cim.config import load_config
    from cim.pipeline.plan import STAGES, plan

    cfg = load_config(REPO / "params.yaml")
    seen: set[str] = set()
    for step in plan(cfg):
        assert set(step.needs) <= seen and step.stage in STAGES, step.name
        seen.add(step.name)
    compare = plan(cfg)[-2]
    assert compare.args == {"captions": {"sft": ["reports/captions/sft/captions.jsonl"],
                                         **{r: [f"reports/captions/{r}-s{s}/captions.jsonl" for s in (0, 1, 2)]
                                            for r in ("cim", "cim-grc", "cim-qir", "cim-guard", "cim-gdpo")}},
                            "benchmark": "world", "baseline": "sft", "out_dir": "reports/results", "n_boot": 1000}


def test_bind_puts_what_a_needed_step_returned_in_place_of_its_planned_result():
    from cim.config import load_config
    from cim.pipeline.plan import bind, step

    cfg = load_config(REPO / "params.yaml", ["pipeline.seeds=[0]"])
    done = {"checkpoints/sft": "runs/earlier/checkpoints/sft",
            "reports/captions/cim-s0/captions.jsonl": Path("runs/earlier/captions/cim-s0.jsonl")}
    assert bind(step(cfg, "train@cim-0"), done)["sft_dir"] == "runs/earlier/checkpoints/sft"
    captions = bind(step(cfg, "compare"), done)["captions"]
    assert captions["cim"] == ["runs/earlier/captions/cim-s0.jsonl"]
    assert captions["sft"] == ["reports/captions/sft/captions.jsonl"]         # not returned yet: as planned


def test_train_step_defaults_and_unknown_rows():
    from cim.config import load_config
    from cim.errors import ConfigError
    from cim.pipeline.plan import plan, step, train_step

    cfg = load_config(REPO / "params.yaml", ["pipeline.checkpoint_dir=ck", "pipeline.seeds=[3,4]"])
    assert train_step(cfg, "cim-grc") == step(cfg, "train@cim-grc-3")         # the first of pipeline.seeds
    assert train_step(cfg, "sft", 9) == plan(cfg)[0]                            # the SFT start has no seed
    assert train_step(cfg, "cim", 7).args["out_dir"] == "ck/cim-s7"
    with pytest.raises(ConfigError, match="nope"):
        train_step(cfg, "nope")
    with pytest.raises(ConfigError, match="nope"):
        plan(cfg, rows=["nope"])


def test_the_runner_refuses_a_step_before_one_it_needs():
    from cim.stages import run_steps, stage_function
    from cim.config import load_config
    from cim.pipeline.plan import STAGES, plan

    cfg = load_config(REPO / "params.yaml")
    steps = plan(cfg)
    with pytest.raises(ValueError, match="caption-sft runs before sft"):
        run_steps(cfg, [steps[1], steps[0]])
    assert all(callable(stage_function(s)) for s in STAGES)


def test_the_ablation_trains_the_plan_of_its_rows_in_its_own_folders(tmp_path):
    """The runner here only records the steps and answers a table: what is checked is the plan the ablation
    hands it (rows, folders, baseline, no publish) and how the table's rows come back to its variants."""
    from cim.ablate.axes import variants
    from cim.config import load_config
    from cim.stages.ablate import training_rows

    cfg = load_config(REPO / "params.yaml", ["pipeline.seeds=[0,1]"])
    found = variants(cfg, "components", ["grc", "both"])
    cfgs = [load_config(REPO / "params.yaml", ["pipeline.seeds=[0,1]", *v.overrides]) for v in found]
    seen = {}

    def runner(wcfg, steps, progress=True):
        seen["steps"] = steps
        rows = [{"captioner": r, "gt_object_recall": float(i), "delta_gt_object_recall": i - 0.5}
                for i, r in enumerate(steps[-1].args["captions"])]
        return {"compare": {"rows": rows}}

    rows, how = training_rows(cfg, found, cfgs, tmp_path, runner, progress=False)
    names = [s.name for s in seen["steps"]]
    assert names == ["sft", "caption-sft", "train@cim-0", "caption@cim-0", "train@cim-1", "caption@cim-1",
                     "train@cim-grc-0", "caption@cim-grc-0", "train@cim-grc-1", "caption@cim-grc-1", "compare"]
    work = (tmp_path / "train").as_posix()
    assert all(o.startswith(work + "/") for s in seen["steps"] for o in s.outs)
    assert seen["steps"][-1].args["baseline"] == "sft" and seen["steps"][-1].args["out_dir"] == f"{work}/results"
    # the table's rows are the pipeline's (sft, cim, cim-grc); each variant gets its row's columns
    assert rows == {"grc": {"train.gt_object_recall": 2.0, "train.delta_gt_object_recall": 1.5},
                    "both": {"train.gt_object_recall": 1.0, "train.delta_gt_object_recall": 0.5}}
    assert "cim-grc, cim" in how


def test_the_guarded_row_trains_with_the_guarded_protocol_and_records_it():
    """params.yaml's cim-guard row is the guarded protocol (its params applied, its name in the run's tags and
    name); cim-gdpo is the paper's reward with GDPO's aggregation, no guards."""
    from cim.config import load_config
    from cim.pipeline.plan import plan
    from cim.pipeline.variants import run_name, variant_config
    from cim.protocols import load_protocol, tags

    cfg = load_config(REPO / "params.yaml")
    guard = variant_config(cfg, "cim-guard", 2)
    proto = load_protocol("guarded").params
    assert list(guard.reward.guards) == proto["reward.guards"] and guard.reward.aggregate == proto["reward.aggregate"]
    assert guard.train.local.grpo_seed == 2 and guard.reward.mode == cfg.reward.mode
    assert tags(guard) == {"protocol": "guarded", "protocol.sha256": tags(guard)["protocol.sha256"],
                           "protocol.deviations": "none"}
    assert run_name(cfg, "train", "cim-guard", 2) == "train[protocol=guarded,seed=2]"
    gdpo = variant_config(cfg, "cim-gdpo", 0)
    assert gdpo.reward.aggregate == "gdpo" and not gdpo.reward.guards and tags(gdpo) == {"protocol": "none"}
    from cim.stages.publish import _row_params          # what the compare run of each row says it is

    table = {"benchmark": "world", "baseline": "sft", "n_boot": 10}
    said = {r: _row_params(cfg, table, {"captioner": r, "n_seeds": 3}) for r in ("cim", "cim-guard", "cim-gdpo")}
    assert said["cim-guard"]["protocol"] == "guarded"
    assert said["cim-guard"]["reward.guards"] == "repetition,length,fluency"
    assert said["cim-guard"]["reward.aggregate"] == "sum" and said["cim-gdpo"]["reward.aggregate"] == "gdpo"
    assert said["cim-gdpo"]["protocol"] == "none" and "reward.guards" not in said["cim-gdpo"]
    assert not {"reward.guards", "reward.aggregate"} & set(said["cim"])    # the paper's rows: as before
    assert [s.name for s in plan(cfg) if s.name.startswith("train@cim-g")] == [
        "train@cim-grc-0", "train@cim-grc-1", "train@cim-grc-2", "train@cim-guard-0", "train@cim-guard-1",
        "train@cim-guard-2", "train@cim-gdpo-0", "train@cim-gdpo-1", "train@cim-gdpo-2"]


def test_the_aggregate_ablation_stage_reads_the_table_and_the_curves_of_its_rows():
    """dvc.yaml's ablate-aggregate: after compare and the trainings of the rows its variants map to (cim,
    cim-gdpo), on what the measurement reads (cim.stages.ablate.pipeline_inputs), writing its report."""
    from cim.ablate.axes import variants
    from cim.stages.ablate import pipeline_inputs as inputs, pipeline_row
    from cim.config import load_config
    from cim.pipeline.plan import plan

    cfg = load_config(REPO / "params.yaml")
    found = variants(cfg, "aggregate")
    rows = [pipeline_row(cfg, load_config(REPO / "params.yaml", list(v.overrides))) for v in found]
    assert rows == ["cim", "cim-gdpo"]
    st = _dvc_stages(REPO)["ablate-aggregate"]
    assert st["cmd"] == f"cim ablate aggregate --out {cfg.ablate.out_dir}"
    assert [d for d in st["deps"] if not d.startswith(("src/", "configs/", "params.yaml"))] == inputs(cfg, rows)
    steps = {s.name: s for s in plan(cfg)}
    assert any(_under(inputs(cfg, rows)[0], o) for o in steps["compare"].outs)
    for row in rows:                    # each curve is a report folder of one of the row's trainings
        assert {d.split("/")[-2] for d in inputs(cfg, [row])[1:]} == {
            steps[f"train@{row}-{s}"].args["report_dir"].split("/")[-1] for s in cfg.pipeline.seeds}
    assert sorted(st["outs"]) == sorted(f"{cfg.ablate.out_dir}/aggregate.{x}" for x in ("json", "md", "metrics.json",
                                                                                          "png"))
