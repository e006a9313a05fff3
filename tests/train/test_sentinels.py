"""The training sentinels (cim.train.sentinels): their numbers, their trips, the local trainer pushed into
repetition stopping on one (exit code 3, the checkpoint of that step, the MLflow tag), a normal run tripping
none, and verl's reward-side aggregation of the same numbers."""
import json
import random

import numpy as np
import pytest
import torch

from support.train_world import config, index_dir, params_file, root

from cim.config.schema import SentinelConfig
from cim.errors import ConfigError
from cim.plugins import GUARDS
from cim.reward.guards import Guard
from cim.reward.text import distinct_n, repeated_ngram_rate
from cim.train.sentinels import Sentinels, Trip, merge, text_sums


class Echo(Guard):
    """A guard that pays repetition (minus the share of words NOT repeating an earlier word): a reward that
    pushes the policy toward the hack the repeat-rate sentinel watches."""

    defaults = {"weight": 1.0}

    def __call__(self, caption: str) -> float:
        return repeated_ngram_rate(caption, 1) - 1.0


@pytest.fixture
def echo_guard():
    """The ``echo`` guard registered for one test (the registry is process-wide: other modules must not see it)."""
    GUARDS.register("echo")(Echo)
    yield "echo"
    GUARDS.unregister("echo")


CAPTIONS = ["a red circle a red circle", "a blue square on grass", ""]
RESULTS = [{"score": 6.0, "guards": {"repetition": -0.25, "length": 0.0}, "error": None},
           {"score": 5.0, "guards": {"repetition": 0.0, "length": -0.5}, "error": None},
           {"score": None, "guards": {}, "error": "empty caption"}]


def _words_score(calls):
    def score(items):                 # a tiny real reward: the words (RESULTS hold the captions')
        calls.append(len(items))
        return [{"score": float(len(i["caption"].split())), "error": None} for i in items]
    return score


def test_observe_reports_the_text_statistics_the_guards_and_the_hack_probe():
    calls = []
    s = Sentinels(SentinelConfig(probe_captions=2, probe_hacks=["repeat", "stuff", "keywords", "praise"]),
                  _words_score(calls), seed=3, guards=["repetition", "length"])
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    m = s.observe(5, CAPTIONS, ["a", "b", "c"], RESULTS)          # a probed step (PROBE_EVERY)
    assert m["sentinel/repeat_rate"] == pytest.approx(sum(repeated_ngram_rate(c, 3) for c in CAPTIONS) / 3)
    assert m["sentinel/repeat_rate"] == pytest.approx(0.25 / 3)      # 4 trigrams, one repeats
    assert m["sentinel/distinct_1"] == pytest.approx(distinct_n(CAPTIONS, 1))
    assert m["sentinel/distinct_2"] == pytest.approx(distinct_n(CAPTIONS, 2))
    assert m["sentinel/length"] == pytest.approx(11 / 3) and m["sentinel/length_ratio"] == 1.0
    assert m["sentinel/guard_repetition"] == pytest.approx(-0.125) and m["sentinel/guard_length"] == -0.25
    # both scored captions probed, in one call: repeat, stuff and praise are longer (win), keywords shorter
    assert calls == [8] and m["sentinel/hack_probe"] == pytest.approx(6 / 8)
    # the probe draws from its own generator: the trainer's streams are untouched
    assert random.getstate() == states[0] and (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])
    assert "sentinel/hack_probe" not in s.observe(6, CAPTIONS, "abc", RESULTS) and calls == [8]
    later = s.observe(10, ["one two", "three four five six seven eight nine ten eleven twelve thirteen"], ["a", "b"],
                      [{"score": 2.0, "error": None}, {"score": 11.0, "error": None}])
    assert later["sentinel/length_ratio"] == pytest.approx(6.5 / (11 / 3))   # to the first step's mean
    # the probe pools the last PROBE_WINDOW probes: the second's 4 of 4 (repeat and praise, longer; no
    # noun or adjective to stuff) with the first's 6 of 8
    assert later["sentinel/hack_probe"] == pytest.approx((6 + 4) / (8 + 4))
    # the same step samples the same captions: one caption of two, seeded by (seed, step)
    picks = {Sentinels(SentinelConfig(probe_captions=1), _words_score([]), seed=3).probe(5, CAPTIONS, "abc", RESULTS)
             for _ in range(3)}
    assert len(picks) == 1
    assert Sentinels(SentinelConfig(hack_probe=0), _words_score(calls)).probe(1, CAPTIONS, "abc", RESULTS) is None
    with pytest.raises(ConfigError, match="probe_hacks: concat cannot be probed"):
        Sentinels(SentinelConfig(probe_hacks=["repeat", "concat"]))


def test_thresholds_trip_once_with_one_line_and_the_tags(capsys):
    tags = []
    s = Sentinels(SentinelConfig(distinct_2=0.2, guard_min=0.5, after_step=3), guards=["repetition"],
                  tag=tags.append)
    s._probes.extend([(1, 1)] * 3)                                # the hack probe trips on a full window
    bad = {"sentinel/repeat_rate": 0.3, "sentinel/length_ratio": 3.5, "sentinel/hack_probe": 0.9,
           "sentinel/distinct_2": 0.1, "sentinel/guard_repetition": -0.6}
    assert s.trips(2, bad) == []                                  # before after_step
    assert [t.name for t in s.trips(3, bad)] == ["repeat_rate", "length_ratio", "hack_probe", "distinct_2",
                                                  "guard_repetition"]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "sentinel repeat_rate tripped at step 3: 0.3 (threshold 0.1)" and len(err) == 5
    assert err[4] == "sentinel guard_repetition tripped at step 3: -0.6 (threshold -0.5)"
    assert tags[0] == {"cim.sentinel": "repeat_rate@3=0.3", "cim.sentinel.repeat_rate": "3=0.3"}
    assert tags[1] == {"cim.sentinel.length_ratio": "3=3.5"}      # cim.sentinel keeps the run's first trip
    assert s.trips(4, bad) == []                                  # each sentinel trips once
    fine = {"sentinel/repeat_rate": 0.1, "sentinel/length_ratio": 3.0, "sentinel/hack_probe": 0.8,
            "sentinel/distinct_2": 0.2, "sentinel/guard_repetition": -0.5}
    assert Sentinels(SentinelConfig(distinct_2=0.2, guard_min=0.5), guards=["repetition"]).crossed(9, fine) == []
    off = SentinelConfig(repeat_rate=0, length_ratio=-1, hack_probe=0, after_step=0)
    assert Sentinels(off, guards=["repetition"]).crossed(9, bad) == []     # <= 0: off (distinct_2, guard_min too)
    stopping = Sentinels(SentinelConfig(on_trip="stop"))
    assert stopping.trips(5, bad)[0] == Trip("repeat_rate", 5, 0.3, 0.1)
    assert "hack_probe" not in [t.name for t in stopping.trips(5, bad)]   # one probe alone does not trip
    assert capsys.readouterr().err == ""                          # stop: the raised error carries the line
    assert Sentinels.from_config(config("train.sentinels.enabled=false")) is None


def _local(out, *extra):
    w = root() / "world"
    return [f"train.local.out_dir={out}", f"train.local.report_dir={out}-reports", "train.local.sft_steps=30",
            "train.local.sft_batch=8", "train.local.d_model=32", "train.local.n_layers=1", "train.local.n_heads=2",
            "train.local.prompts_per_step=3", "train.grpo.group_size=3", "train.local.max_new_tokens=16",
            "train.local.eval_every=100", "train.local.n_eval=4", f"train.local.eval_manifest={w / 'train.jsonl'}",
            "train.local.threads=1", *extra]


def _run_of(cfg, out):
    from cim.tracking import client, configure
    from cim.train.local.run import RUN_KEY_TAG, checkpoint_key

    [run] = client(cfg).search_runs([configure(cfg)], f"tags.`{RUN_KEY_TAG}` = '{checkpoint_key(out)}'")
    return run, client(cfg)


def test_a_policy_pushed_into_repetition_trips_the_sentinel_and_stops_with_exit_code_3(tmp_path, capsys, echo_guard):
    """A reward that pays repeated words (the ``echo`` guard) drives the tiny policy's trigram repetition over
    the default 0.1; with ``on_trip: stop`` the run checkpoints the step it tripped at and exits 3."""
    from cim.cli import main

    index_dir()
    out = tmp_path / "hacked"
    overrides = _local(out, "train.local.grpo_steps=14", "train.local.save_every=4", "train.local.lr=0.01",
                       "reward.guards=[echo]", "reward.guard.echo.weight=20", "train.sentinels.hack_probe=0",
                       "train.sentinels.on_trip=stop")
    assert main(["train", "--backend", "local", "--no-progress", "--params", str(params_file()), *overrides]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    cfg = config(*overrides)
    run, client = _run_of(cfg, out)
    rates = [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, "sentinel/repeat_rate"),
                                               key=lambda m: m.step)]
    step, value = next((s, v) for s, v in rates if s >= 5 and v > 0.1)      # the first crossing after step 5
    assert step < 14 and [s for s, _ in rates] == list(range(1, step + 1))   # it stopped there
    line = f"sentinel repeat_rate tripped at step {step}: {value:.4g} (threshold 0.1)"
    assert err[-1] == (f"cim train: {line}; training stopped after checkpoint {out / f'grpo_{step:05d}'} "
                       "(train.sentinels.on_trip=stop)")
    assert not any(e.startswith("sentinel ") for e in err)           # one line: the command's
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == f"grpo_{step:05d}"
    assert (out / f"grpo_{step:05d}" / "state.pt").exists() and not (out / "summary.json").exists()
    assert run.data.tags["cim.sentinel"] == f"repeat_rate@{step}={value:.4g}"
    assert run.data.tags["cim.sentinel.repeat_rate"] == f"{step}={value:.4g}"
    assert run.info.status == "FAILED"


def test_a_normal_run_trips_none_and_keeps_sentinel_metrics_out_of_checkpoints(tmp_path, capsys):
    """The guarded reward (the ``guarded`` protocol's guards) with the default thresholds: nothing trips, the
    hack probe included (with Υ alone, the tiny world's 24-caption corpus gives hacks >= their caption 15 times
    of 16: the probe trips, rightly)."""
    from cim.train.local.checkpoints import load_checkpoint
    from cim.train.local.run import run_local

    index_dir()
    out = tmp_path / "normal"
    cfg = config(*_local(out, "train.local.grpo_steps=15", "train.local.save_every=15",
                         "reward.guards=[repetition,length,fluency]"))
    assert run_local(cfg, progress=False) == 0                    # its own scorer: the guarded reward
    assert "sentinel" not in capsys.readouterr().err
    run, client = _run_of(cfg, out)
    assert not [k for k in run.data.tags if k.startswith("cim.sentinel")]
    assert {"sentinel/repeat_rate", "sentinel/distinct_2", "sentinel/length_ratio", "sentinel/hack_probe",
            "sentinel/seconds"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "sentinel/hack_probe")] == [5, 10, 15]
    history = load_checkpoint(out, "grpo_00015")["history"]
    assert history and not [k for r in history for k in r["metrics"] if k.startswith("sentinel/")]
    assert "sentinel" not in (out / "curves.csv").read_text() + (out / "summary.json").read_text()
    # the same run without sentinels: the same bytes (checkpoints, samples, reports): they draw from no
    # training stream and write nothing but MLflow records
    off = tmp_path / "off"
    assert run_local(config(*_local(off, "train.local.grpo_steps=15", "train.local.save_every=15",
                                    "reward.guards=[repetition,length,fluency]", "train.sentinels.enabled=false")),
                     progress=False, track=False) == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) >= 7 and sorted(p.relative_to(off) for p in off.rglob("*") if p.is_file()) == files
    assert all((out / f).read_bytes() == (off / f).read_bytes() for f in files)


def test_verl_reward_side_sums_merge_to_the_same_numbers_log_and_tag(tmp_path, capsys):
    from cim.train.verl import reward_metrics as rm
    from cim.train.verl.plan import verl_plan

    part_a, part_b = {}, {}
    for caption, result in zip(CAPTIONS[:2], RESULTS[:2]):
        merge(part_a, rm.sample_sums({"caption": caption, "guards": result["guards"]}, watch=True))
    merge(part_b, rm.sample_sums({"caption": CAPTIONS[2], "failed": 1.0}, watch=True))   # another worker's
    local = Sentinels(SentinelConfig(hack_probe=0), guards=["repetition", "length"])
    want = local.observe(1, CAPTIONS, "abc", RESULTS)
    assert Sentinels(SentinelConfig()).summarise(1, merge(part_a, part_b)) == pytest.approx(want)
    assert "grams_1" not in rm.sample_sums({"caption": "a b"}) and text_sums("a b c")["ngrams_2"] == 2

    from cim.tracking import client, configure, tracking_uri

    cfg = config()
    run_id = client(cfg).create_run(configure(cfg)).info.run_id
    sink = rm.mlflow_sink(run_id, tracking_uri(cfg), Sentinels.from_config(config("train.sentinels.after_step=0",
                                                                                 "train.sentinels.repeat_rate=0.05"),
                                                                          stop=False))
    sink(1, part_a)                   # part_a: both parts merged
    run = client(cfg).get_run(run_id)
    assert run.data.metrics["sentinel/repeat_rate"] == pytest.approx(0.25 / 3)
    assert run.data.metrics["cim_reward/samples"] == 3 and run.data.tags["cim.sentinel"] == "repeat_rate@1=0.08333"
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sentinel repeat_rate tripped at step 1: 0.08333 (threshold 0.05)"
    with pytest.raises(ConfigError, match="on_trip=stop is for --backend local"):
        verl_plan(config("train.backend=verl", "train.sentinels.on_trip=stop"), str(tmp_path / "p.yaml"))


def test_a_flow_task_does_not_retry_a_tripped_sentinel():
    from prefect.states import Failed

    from cim.errors import SentinelTripped
    from cim.flows.common import retry_unless_sentinel

    assert SentinelTripped("sentinel x tripped").exit_code == 3 and ConfigError("bad").exit_code == 2
    assert retry_unless_sentinel(None, None, Failed(data=SentinelTripped("sentinel x tripped"))) is False
    assert retry_unless_sentinel(None, None, Failed(data=RuntimeError("the index is gone"))) is True
