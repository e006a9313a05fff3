"""`cim ablate`: nested corpus subsets, the report's exact shape with one child MLflow run per variant under one
parent, resume, evaluation settings that do not follow the retrieval encoder, verify's metrics without
config values, and full-scale encoders whose weights are absent failing in one line (exit 2)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]


def _overrides(tiny_cfg, tmp_path) -> list[str]:
    world = Path(tiny_cfg.world.out_dir)
    return [*TINY_OVERRIDES, f"world.out_dir={world}", f"index.out_dir={tiny_cfg.index.out_dir}",
            f"index.manifest={world / 'corpus.jsonl'}", f"index.sources={world / 'sources.jsonl'}",
            f"train.manifest={world / 'train.jsonl'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tracking.artifact_dir={tmp_path / 'artifacts'}"]


def test_nested_subsets_are_nested_deterministic_and_keep_the_training_rows(tiny_cfg, tiny_index_dir):
    from cim.ablate.subsets import nested_subsets, training_rows
    from cim.index import CorpusIndex
    from cim.index.views import subset_index
    from cim.io import read_jsonl

    index = CorpusIndex.load(tiny_index_dir, device="cpu")
    train_ids = [r["id"] for _, r in read_jsonl(tiny_cfg.train.manifest.replace("data/world", tiny_cfg.world.out_dir))]
    keep = training_rows(index, train_ids)
    assert len(keep) >= len(train_ids) and set(train_ids) <= {index.ids[r] for r in keep}
    shares = [0.0, 0.1, 0.3, 1.0]
    subsets = nested_subsets(len(index.ids), keep, shares, seed=0)
    sizes = [len(s) for s in subsets]
    assert sizes == sorted(sizes) and sizes[0] == len(keep) and sizes[-1] == len(index.ids)
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) <= set(large) and len(small) < len(large)
    for s in subsets:
        assert set(keep) <= set(s) and list(s) == sorted(set(s))
    again = nested_subsets(len(index.ids), keep, shares, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(subsets, again))
    other = nested_subsets(len(index.ids), keep, shares, seed=1)
    assert not np.array_equal(subsets[1], other[1])          # the seed draws which other rows join
    sub = subset_index(index, subsets[1])                     # embeddings reused, row by row
    rows = subsets[1]
    assert sub.ids == [index.ids[r] for r in rows]
    assert np.array_equal(sub.text_vectors(), index.text_vectors()[rows])
    assert np.array_equal(sub.image_table, index.image_table[rows])
    assert np.array_equal(sub.identity.groups, index.identity.groups[rows])


def _child_runs(tmp_path, parent_id):
    import mlflow

    client = mlflow.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cim")
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def test_ablate_beta_writes_the_report_with_one_child_run_per_variant(tiny_cfg, tiny_index_dir, tmp_path):
    from cim.stages.ablate import ablate as run_ablation

    out, work = tmp_path / "reports", tmp_path / "work"
    report = run_ablation(None, _overrides(tiny_cfg, tmp_path), "beta", ["0.5", "2"], out_dir=out, work_dir=work,
                          progress=False)
    written = json.loads((out / "beta.json").read_text())
    assert set(written) == {"axis", "measurement", "rows"}
    assert written["axis"] == "beta" and written["measurement"] == ["quality_order"]
    assert [r["variant"] for r in written["rows"]] == ["beta=0.5", "beta=2"]
    for row in written["rows"]:
        assert all(isinstance(v, (int, float)) for k, v in row.items() if k != "variant")
        assert {"score.rho", "grc.rho", "qir.rho", "score.mean.detailed-correct", "beta", "corpus_rows"} <= set(row)
    low, high = written["rows"]
    assert low["grc.rho"] == high["grc.rho"] and low["qir.rho"] == high["qir.rho"]   # beta moves only their sum
    mean = lambda r, lvl: r[f"score.mean.{lvl}"]  # noqa: E731  Υ = GRC + β QIR, level by level
    for lvl in ("wrong", "detailed-correct"):
        assert mean(high, lvl) - mean(low, lvl) == pytest.approx(1.5 * high[f"qir.mean.{lvl}"], abs=1e-5)
    assert (out / "beta.md").read_text().count("| beta=") == 2 and (out / "beta.png").stat().st_size > 5000
    dvc_shaped = json.loads((out / "beta.metrics.json").read_text())     # what dvc metrics show / exp show read
    assert dvc_shaped == {r["variant"]: {k: v for k, v in r.items() if k != "variant"} for r in written["rows"]}

    client, children = _child_runs(tmp_path, report["run_id"])
    assert sorted(r.data.tags["ablate.variant"] for r in children) == ["beta=0.5", "beta=2"]
    assert {r.data.params["reward.beta"] for r in children} == {"0.5", "2.0"}
    assert all(r.data.params["reward.mode"] == "both" for r in children)
    assert client.get_run(report["run_id"]).info.status == "FINISHED"
    first = (out / "beta.json").read_bytes()
    again = run_ablation(None, _overrides(tiny_cfg, tmp_path), "beta", ["0.5", "2"], out_dir=out, work_dir=work,
                         progress=False)                            # resumed: both variants reused
    assert (out / "beta.json").read_bytes() == first
    _, children = _child_runs(tmp_path, again["run_id"])
    assert {r.data.tags["ablate.reused"] for r in children} == {"true"}


def test_every_variant_sets_every_key_its_axis_varies(tiny_cfg):
    from cim.ablate.axes import variants

    for axis, keys in (("components", {"reward.mode", "reward.beta"}), ("beta", {"reward.mode", "reward.beta"}),
                       ("encoders", {"encoders.text.model", "encoders.image.name", "encoders.image.model",
                                     "encoders.image.pretrained"})):
        for v in variants(tiny_cfg, axis):
            assert keys <= {o.split("=")[0] for o in v.overrides}, (axis, v)


def test_evaluation_settings_do_not_follow_the_retrieval_encoder(tiny_cfg, tiny_world):
    from cim.eval.benchmarks import load_benchmark
    from cim.eval.evaluate import Evaluator

    world = load_benchmark("world", REPO, data_dir=str(tiny_world))
    seen = []
    for model, batch, device in (("all-MiniLM-L6-v2", 128, "auto"), ("all-mpnet-base-v2", 7, "cpu")):
        cfg = copy.deepcopy(tiny_cfg)
        cfg.encoders.text.model, cfg.encoders.text.batch_size, cfg.encoders.text.device = model, batch, device
        ev = Evaluator(cfg, root=REPO, log=lambda *a: None)
        seen.append((ev.capture_encoder(world), ev.capture_encoder_fields(world), dict(cfg.eval.judge)))
    assert seen[0] == seen[1]
    assert seen[0][1]["model"] == "all-MiniLM-L6-v2"


def test_verify_metrics_hold_no_config_values(tiny_cfg, tiny_index_dir, tmp_path):
    from cim.stages.verify import verify

    verify(tiny_cfg, out_dir=tmp_path, track=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())

    def leaves(obj):
        for v in obj.values():
            yield from leaves(v) if isinstance(v, dict) else [v]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in leaves(metrics))
    assert not {"reward", "encoders", "protocol", "settings"} & set(metrics)
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["reward"]["beta"] == tiny_cfg.reward.beta and settings["encoders"]["text"] == "all-MiniLM-L6-v2"


@pytest.mark.parametrize("image", ["vit-h-14", "dinov3"])
def test_full_scale_encoders_without_weights_fail_in_one_line(image, tmp_path, defaults_params):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_CACHE": str(tmp_path / "empty-hf-cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-m", "cim.cli", "ablate", "encoders", "--params", str(defaults_params),
                           "--text", "minilm", "--image", image, "--work", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out"), f"index.out_dir={tmp_path / 'no-index'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cim ablate:")]
    assert len(lines) == 1 and "weights" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
