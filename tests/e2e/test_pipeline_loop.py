"""The captioner comparison on a tiny real world, as its run plan runs it (cim.pipeline.plan, the commands'
runner): one SFT start, three GRPO variants from it with two seeds each, the local captioner over the held-out
benchmark, the table with intervals, its publication, and the MLflow record of it all (real sqlite store, real
checkpoints; nothing mocked)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from support.tiny import PAPER_ROWS, params_with_rows

REPO = Path(__file__).resolve().parents[2]
TINY = ["world.n_corpus=120", "world.n_train=12", "world.n_bench=10", "world.image_size=64",
        "encoders.image.image_size=64", "index.shard_size=50", "train.val_size=2",
        "train.local.sft_steps=60", "train.local.sft_batch=8", "train.local.grpo_steps=2",
        "train.local.prompts_per_step=2", "train.grpo.group_size=2", "train.local.n_eval=4",
        "train.local.d_model=32", "train.local.n_layers=1", "train.local.n_heads=2",
        "train.local.max_new_tokens=12", "train.local.save_every=1", "train.local.eval_every=2",
        "pipeline.seeds=[0,1]", "pipeline.n_boot=200"]
ROWS = ["sft", *PAPER_ROWS]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """The whole comparison run once, in a tiny world's folder, as one pipeline execution."""
    from cim.cli import main
    from cim.stages import run_steps
    from cim.config import load_config
    from cim.pipeline.plan import captions_map, plan

    work = tmp_path_factory.mktemp("loop")
    params_with_rows(REPO / "params.yaml", work / "params.yaml", PAPER_ROWS)   # the guard/gdpo rows: same loop
    shutil.copytree(REPO / "configs", work / "configs")
    old_cwd, saved = Path.cwd(), {k: os.environ.get(k) for k in ("CIM_PIPELINE_ID", "MLFLOW_TRACKING_URI")}
    os.chdir(work)
    os.environ["CIM_PIPELINE_ID"] = "loop-test"
    # its own store: the session's store holds other tests' runs of the same names (train[sft], ...)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    try:
        assert main(["prepare", "--no-mlflow", *TINY]) == 0
        assert main(["index", "--no-mlflow", *TINY]) == 0
        cfg = load_config("params.yaml", TINY)
        done = run_steps(cfg, plan(cfg), progress=False)
        paths = {row: [work / p for p in files] for row, files in captions_map(cfg).items()}
        yield {"cfg": cfg, "work": work, "captions": paths, "table": done["compare"], "published": done["publish"]}
    finally:
        os.chdir(old_cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _captions(path: Path) -> list[str]:
    return [json.loads(line)["caption"] for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_local_captions_are_deterministic_whatever_the_batch_size(loop, tmp_path):
    from cim.config import with_overrides
    from cim.stages.caption import caption

    cfg, work = loop["cfg"], loop["work"]
    os.chdir(work)
    try:
        one = caption(with_overrides(cfg, {"eval.captioner.batch_size": 1}), "cim-grc-s1", "world",
                      tmp_path / "b1.jsonl", progress=False, track=False)
        seven = caption(with_overrides(cfg, {"eval.captioner.batch_size": 7}), "cim-grc-s1", "world",
                        tmp_path / "b7.jsonl", progress=False, track=False)
    finally:
        os.chdir(REPO)
    caps = _captions(one)
    assert caps == _captions(seven) == _captions(loop["captions"]["cim-grc"][1])
    assert len(caps) == 10 and sum(1 for c in caps if c.strip()) >= 5       # the SFT start learned to speak
    row = json.loads(one.read_text().splitlines()[0])
    assert row["prompt"] and row["decoding"]["do_sample"] is False and row["captioner"] == "local:checkpoints/cim-grc-s1"
    meta = json.loads((tmp_path / "captions.meta.json").read_text())
    assert meta["describe"]["model"]["checkpoint"] == "grpo_00002" and meta["describe"]["model"]["reward_mode"] == "grc"
    assert not Path(row["image"]).is_absolute()


@pytest.mark.slow
def test_seeds_vary_grpo_from_one_sft_start(loop):
    """Two seeds of one variant start from the same SFT checkpoint and end in different GRPO checkpoints."""
    import hashlib

    work = loop["work"]
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()                       # noqa: E731
    s0, s1 = (work / f"checkpoints/cim-s{s}/grpo_00002/state.pt" for s in (0, 1))
    assert digest(s0) != digest(s1)
    assert (work / "checkpoints/cim-s0/summary.json").read_text() != "" and \
        json.loads((work / "checkpoints/cim-s0/summary.json").read_text())["sft_eval"] == \
        json.loads((work / "checkpoints/cim-s1/summary.json").read_text())["sft_eval"]      # the same start


@pytest.mark.slow
def test_compare_writes_means_intervals_and_paired_deltas(loop):
    out = loop["work"] / loop["cfg"].pipeline.out_dir
    from cim.io import json_safe

    table = json.loads((out / "captioners.json").read_text())
    assert table == json.loads(json.dumps(json_safe(loop["table"])))
    assert table["benchmark"] == "world" and table["baseline"] == "sft" and table["n_boot"] == 200
    assert [r["captioner"] for r in table["rows"]] == ROWS
    assert [r["n_seeds"] for r in table["rows"]] == [1, 2, 2, 2]
    keys = set(table["rows"][0])
    assert all(set(r) == keys for r in table["rows"])
    # (the tiny captioners' captions are too poor for some metrics to be defined on every row, e.g. object
    # precision with no object named; a metric undefined on a row is left out of every row)
    for metric in ("capture", "bleu4", "meteor", "cim", "gt_object_recall", "caption_words"):
        assert metric in table["columns"] and {f"delta_{metric}", f"{metric}_ci95", f"delta_{metric}_ci95"} <= keys
    base = table["rows"][0]
    for r in table["rows"]:
        for k in table["columns"]:
            assert r[k] == pytest.approx(sum(r["per_seed"][k]) / r["n_seeds"], abs=1e-12)   # the mean over seeds
            assert r[f"delta_{k}"] == pytest.approx(r[k] - base[k], abs=1e-12)
            lo, hi = r[f"{k}_ci95"]
            assert lo <= hi
    assert all(base[f"delta_{k}"] == 0 and base[f"delta_{k}_ci95"] == [0.0, 0.0] for k in table["columns"])
    metrics = json.loads((out / "metrics.json").read_text())                 # DVC's metrics: the headline only
    assert metrics["cim"] == {"capture": table["rows"][1]["capture"], "cim": table["rows"][1]["cim"]}
    details = json.loads((out / "details.json").read_text())                 # the rest, nested
    assert details["cim"]["capture"] == table["rows"][1]["capture"] and details["cim"]["n_seeds"] == 2
    assert details["cim"]["ci95"]["capture"]["low"] == table["rows"][1]["capture_ci95"][0]
    md = (out / "captioners.md").read_text()
    assert "| ○ sft | 1 |" in md and "| ● cim-qir | 2 |" in md and "± " in md and "### Δ vs sft" in md
    assert (out / "captioners.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_mlflow_runs_are_named_children_of_one_parent_and_the_captioner_loads_back(loop):
    import mlflow
    import numpy as np
    import pandas as pd

    from cim.index import CorpusIndex
    from cim.tracking import client, configure, tracking_uri
    from cim.train.local.inference import LocalModel

    cfg, work = loop["cfg"], loop["work"]
    os.chdir(work)
    try:
        exp = configure(cfg)
        runs = client(cfg).search_runs([exp], max_results=200)
        by_name = {r.info.run_name: r for r in runs}
        parent = by_name["pipeline[loop-test]"]
        children = {"train[sft]", "compare[world]", "caption[sft]",
                    *(f"train[mode={m},seed={s}]" for m in ("both", "grc", "qir") for s in (0, 1)),
                    *(f"caption[{n}-s{s}]" for n in ROWS[1:] for s in (0, 1))}
        assert children <= set(by_name)
        for name in children:
            assert by_name[name].data.tags["mlflow.parentRunId"] == parent.info.run_id, name
            assert by_name[name].info.end_time - by_name[name].info.start_time > 0
        compare_id = by_name["compare[world]"].info.run_id
        assert loop["published"]["published"] and loop["published"]["run_id"] == compare_id   # the publish step
        per_row = [by_name[f"compare[world/{n}]"] for n in ROWS]
        assert all(r.data.tags["mlflow.parentRunId"] == compare_id for r in per_row)
        assert len({frozenset(r.data.metrics) for r in per_row}) == 1 and "capture" in per_row[0].data.metrics
        uri = by_name["train[mode=grc,seed=1]"].data.tags["cim.model_uri"]
        mlflow.set_tracking_uri(tracking_uri(cfg))
        model = mlflow.pyfunc.load_model(uri)
        index = CorpusIndex.load(cfg.index.out_dir, device="cpu")
        ids = [json.loads(line)["id"] for line in Path("data/world/bench.jsonl").read_text().splitlines()][:4]
        feats, _ = index.source_embeddings(ids)
        got = model.predict(pd.DataFrame({"features": [list(map(float, f)) for f in np.asarray(feats)]}))
        assert list(got) == LocalModel.load("checkpoints/cim-grc-s1").generate(np.asarray(feats))
        assert got == _captions(loop["captions"]["cim-grc"][1])[:4]
        # the models page: each seed's logged model carries its benchmark metrics, the benchmark as its dataset
        models = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
        named = {m.name: m for m in models}
        assert {"sft", "cim-grc-s0", "cim-grc-s1"} <= set(named)
        seed1 = loop["table"]["rows"][2]["per_seed"]["capture"][1]
        got = [m for m in named["cim-grc-s1"].metrics if m.key == "capture"]
        assert got and got[0].value == pytest.approx(seed1) and got[0].dataset_name == "world"
        # ... logged into the run that logged the model, not into the compare run (no seed's number there)
        trained = by_name["train[mode=grc,seed=1]"]
        assert named["cim-grc-s1"].source_run_id == trained.info.run_id
        assert trained.data.metrics["capture"] == pytest.approx(seed1)
        assert "capture" not in client(cfg).get_run(compare_id).data.metrics
    finally:
        os.chdir(REPO)


@pytest.mark.parametrize("argv", [["caption", "--captioner", "nope"], ["train", "--backend", "local", "--variant", "nope"],
                                  ["compare", "--captions", "sft=missing.jsonl"]])
def test_a_bad_captioner_is_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    from cim.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(f"cim {argv[0]}: note:")]
    assert len(err) == 1 and err[0].startswith(f"cim {argv[0]}: ") and ("nope" in err[0] or "missing" in err[0])
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "checkpoints").exists()
