"""verl 0.9.1's real training path for the reward: single-sample calls from the agent loop, on CPU.

In training, verl's agent loop scores each rollout as soon as it finishes: ``AgentLoopWorker._compute_score``
sends a one-sample ``DataProto`` to a random reward worker (``random.choice(reward_loop_worker_handles)``,
a Ray actor of ``RewardLoopWorker``), which calls our ``compute_score`` once. ``compute_score_batch`` (what
``test_verl_integration`` exercises) is not on that path. Here verl's own ``AgentLoopWorker._compute_score``
runs against real ``RewardLoopWorker`` Ray actors, and we observe the batching that actually happens
(scorer calls per worker in-process; batches in the shared service), and the per-step GRC/QIR metrics that
reach the MLflow run (verl's trainer does not put reward extras into training metrics).
"""
import asyncio
import json
import os
import random
import time

import numpy as np
import pytest

from support.train_world import captions_for, params_file, scorer, tiny_vl_model, world

from cim.train.verl import reward as verl_reward, reward_metrics

N_PROMPTS, N_ROLLOUTS, N_WORKERS = 8, 5, 3


def _mlflow_run(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    exp = mlflow.set_experiment(f"reward-metrics-{tmp_path.name}")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        return run.info.run_id


def _history(run_id, key, timeout_s=60.0, steps=None):
    """The metric's (step, value) pairs once ``steps`` are all there (the reward side logs after idle)."""
    from mlflow.tracking import MlflowClient

    client, deadline = MlflowClient(), time.monotonic() + timeout_s
    while True:
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if steps is None or {s for s, _ in got} >= set(steps) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _expected(items):
    res = scorer().score(items)
    return {k: float(np.mean([r[k] for r in res])) for k in ("score", "grc", "qir")}


# -- per-step metrics from the reward side (no Ray: this process logs itself) ------------------------------
def test_grc_and_qir_reach_the_mlflow_run_per_training_step(tmp_path, monkeypatch):
    scorer()                                                  # the tiny index exists
    run_id = _mlflow_run(tmp_path)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    items = captions_for(world()["rows"][:12])
    steps = {1: items[:6], 2: items[6:]}

    async def main():
        calls = []
        for step, batch in steps.items():          # verl's servers tag samples with the weights version
            calls += [verl_reward.compute_score("cim_caption", it["caption"], it["image_id"],
                                                {"image_id": it["image_id"], "split": "train",
                                                 "max_global_steps": step - 1},
                                                params=str(params_file()), metrics_idle_s=0.5) for it in batch]
        calls.append(verl_reward.compute_score("cim_caption", "", items[0]["image_id"],   # a caption that is no
                                               {"image_id": items[0]["image_id"], "max_global_steps": 1},  # text
                                               params=str(params_file()), metrics_idle_s=0.5))
        calls.append(verl_reward.compute_score("cim_caption", items[1]["caption"], items[1]["image_id"],
                                               {"image_id": items[1]["image_id"], "split": "val",     # verl's own
                                                "max_global_steps": 1},                               # val metrics
                                               params=str(params_file()), metrics_idle_s=0.5))
        return await asyncio.gather(*calls)

    asyncio.run(main())
    for key in ("grc", "qir", "score"):
        got = _history(run_id, f"cim_reward/{key}/mean", steps=[1, 2])
        assert [s for s, _ in got] == [1, 2], key
        for (step, value) in got:
            assert value == pytest.approx(_expected(steps[step])[key], abs=1e-5), (key, step)
    assert _history(run_id, "cim_reward/samples", steps=[1, 2]) == [(1, 6.0), (2, 7.0)]
    assert _history(run_id, "cim_reward/failed/mean", steps=[1, 2]) == [(1, 0.0), (2, pytest.approx(1 / 7))]


def test_step_metrics_merge_partial_sums_and_number_time_windows():
    logged = []
    agg = reward_metrics.StepMetrics(lambda step, sums: logged.append((step, reward_metrics.to_metrics(sums))),
                                     idle_s=0.2)
    sample = dict.fromkeys(verl_reward.KEYS, 0.0)
    agg.add(3, dict(sample, grc=0.5, qir=1.0, score=1.5))
    agg.merge(3, reward_metrics.sample_sums(dict(sample, grc=0.7, qir=2.0, score=2.7)))   # another worker's part
    agg.add(None, dict(sample, failed=1.0, reward_system_failed=1.0))
    assert agg.flush(everything=True) == 2
    (step, m), (window, w) = logged
    assert step == 3 and m["cim_reward/grc/mean"] == pytest.approx(0.6) and m["cim_reward/samples"] == 2
    assert window is None and w["cim_reward/reward_system_failed/count"] == 1 and "cim_reward/grc/mean" not in w
    assert not [k for k in m if "upsilon" in k or "guard" in k]       # without guards: the metrics as before
    # guards: each one's mean and Υ's, over the scored samples
    agg.add(4, dict(sample, upsilon=0.4, guard_repetition=-0.5, guard_length=0.0))
    agg.add(4, dict(sample, upsilon=0.8, guard_repetition=-0.25, guard_length=-1.0))
    agg.add(4, dict(sample, failed=1.0, guard_repetition=0.0, guard_length=0.0))
    agg.flush(everything=True)
    step, g = logged[-1]
    assert step == 4 and g["cim_reward/samples"] == 3
    assert g["cim_reward/upsilon/mean"] == pytest.approx(0.6)
    assert g["cim_reward/guard_repetition/mean"] == pytest.approx(-0.375)
    assert g["cim_reward/guard_length/mean"] == pytest.approx(-0.5)
    assert reward_metrics.step_of({"max_global_steps": 4, "global_steps": 9}) == 5
    assert reward_metrics.step_of({"global_steps": 0}) == 1 and reward_metrics.step_of({}) is None


# -- the agent loop's single-sample calls against real RewardLoopWorker actors ------------------------------
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    run_id = _mlflow_run(tmp_path_factory.mktemp("agent-loop"))
    os.environ["MLFLOW_RUN_ID"] = run_id                # reward workers inherit it (as under `cim train`)
    # reward workers are scheduled with 1 CPU each (the 2 cores here are shared by every actor)
    ray.init(num_cpus=N_WORKERS + 1, include_dashboard=False, log_to_driver=False)
    try:
        yield run_id
    finally:
        ray.shutdown()
        del os.environ["MLFLOW_RUN_ID"]


def _workers(n, service_url=""):
    """n Ray actors of verl's RewardLoopWorker (as RewardLoopManager creates them), plus a read-only method
    that reports this module's counters of the actor's process."""
    import ray
    from test_verl_integration import compose_ppo, our_overrides
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    class CountingRewardLoopWorker(RewardLoopWorker):
        async def cim_stats(self):
            from cim.train.verl import reward as vr

            return {**vr.stats(), "pid": os.getpid()}

    cfg = compose_ppo(our_overrides(service_url=service_url, window_ms=50.0)
                      + [f"actor_rollout_ref.model.path={tiny_vl_model()}",
                         "+reward.custom_reward_function.reward_kwargs.metrics_idle_s=3.0"])
    handles = [ray.remote(CountingRewardLoopWorker).remote(cfg) for _ in range(n)]
    ray.get([h.cim_stats.remote() for h in handles])          # started (tokenizer and reward fn loaded)
    return handles


def _agent_loop_step(handles, items, step, stagger_s=0.0, seed=0):
    """One training step's rollouts scored as verl's agent loop scores them: per finished rollout,
    AgentLoopWorker._compute_score -> a random reward worker -> one compute_score call."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput, AgentLoopWorker

    loop_worker = AgentLoopWorker.__new__(AgentLoopWorker)    # verl's class; no LLM server behind it
    loop_worker.reward_loop_worker_handles = handles
    loop_worker.processor, loop_worker.mm_processor_kwargs = None, {}
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_vl_model()))
    rng = random.Random(seed)
    random.seed(seed)                                         # verl's random.choice of a reward worker

    async def one(i, it):
        await asyncio.sleep(rng.uniform(0, stagger_s))       # rollouts finish at different times
        output = AgentLoopOutput(prompt_ids=tok("Describe this image.")["input_ids"],
                                 response_ids=tok(it["caption"])["input_ids"] + [tok.eos_token_id],
                                 response_mask=[1] * (len(tok(it["caption"])["input_ids"]) + 1),
                                 num_turns=2, metrics=AgentLoopMetrics(),
                                 extra_fields={"global_steps": step - 1, "min_global_steps": step - 1,
                                               "max_global_steps": step - 1, "turn_scores": [], "tool_rewards": []})
        kwargs = {"data_source": "cim_caption", "uid": f"s{step}-p{i // N_ROLLOUTS}", "index": i // N_ROLLOUTS,
                  "reward_model": {"style": "model", "ground_truth": it["image_id"]},
                  "extra_info": {"split": "train", "index": i // N_ROLLOUTS, "image_id": it["image_id"]},
                  "raw_prompt": [{"role": "user", "content": "Describe this image."}]}
        await loop_worker._compute_score([output], kwargs=kwargs)
        return output

    async def main():
        return await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))

    return asyncio.run(main())


def _step_items(seed):
    rows = world()["rows"]
    prompts = random.Random(seed).sample(rows, N_PROMPTS)
    return [it for r in prompts for it in captions_for([r] * N_ROLLOUTS)]


def _delta(after, before, key):
    return [a[key] - b[key] for a, b in zip(after, before)]


@pytest.mark.slow
def test_agent_loop_single_sample_calls_batch_per_worker_and_in_the_shared_service(ray_cluster, tmp_path):
    import ray

    from cim.service.server import RewardService, ServerHandle, build_app

    scorer()                                                  # the tiny index exists before the workers load it
    report = {"samples_per_step": N_PROMPTS * N_ROLLOUTS, "reward_workers": N_WORKERS}
    # in-process: every reward worker batches only the calls that reach it
    handles = _workers(N_WORKERS)
    for name, step, stagger in (("in_process_at_once", 1, 0.0), ("in_process_staggered_1s", 2, 1.0)):
        items = _step_items(step)
        before = ray.get([h.cim_stats.remote() for h in handles])
        outputs = _agent_loop_step(handles, items, step, stagger_s=stagger, seed=step)
        after = ray.get([h.cim_stats.remote() for h in handles])
        calls, batches = _delta(after, before, "calls"), _delta(after, before, "batches")
        assert sum(calls) == len(items) and len({a["pid"] for a in after}) == N_WORKERS
        assert sum(batches) < len(items) if not stagger else sum(batches) <= len(items)
        want = scorer().score(items)
        assert [o.reward_score for o in outputs] == pytest.approx([w["score"] for w in want], abs=1e-5)
        assert all(o.extra_fields["reward_extra_info"]["failed"] == 0.0 for o in outputs)
        report[name] = {"calls_per_worker": calls, "scorer_calls_per_worker": batches,
                        "scorer_calls": sum(batches)}
    # GRC / QIR of each step reach the MLflow run once, merged over the three workers (MetricsHub)
    for step in (1, 2):
        exp = _expected(_step_items(step))
        got = _history(ray_cluster, "cim_reward/grc/mean", steps=[1, 2])
        assert [v for s, v in got if s == step] == [pytest.approx(exp["grc"], abs=1e-5)]
    assert _history(ray_cluster, "cim_reward/samples", steps=[1, 2]) == [(1, 40.0), (2, 40.0)]
    for h in handles:
        ray.kill(h)
    # through the shared service: every worker's calls meet in one batcher
    service = RewardService(scorer(), max_batch=4096, window_s=0.005)
    with ServerHandle(build_app(service)) as handle:
        handles = _workers(N_WORKERS, service_url=handle.url)
        for name, step, stagger in (("service_at_once", 3, 0.0), ("service_staggered_1s", 4, 1.0)):
            items = _step_items(step)
            before_b, before = service.batcher.stats.batches, ray.get([h.cim_stats.remote() for h in handles])
            outputs = _agent_loop_step(handles, items, step, stagger_s=stagger, seed=step)
            after = ray.get([h.cim_stats.remote() for h in handles])
            want = scorer().score(items)
            assert [o.reward_score for o in outputs] == pytest.approx([w["score"] for w in want], abs=1e-5)
            report[name] = {"calls_per_worker": _delta(after, before, "calls"),
                            "requests_per_worker": _delta(after, before, "batches"),
                            "service_scorer_calls": service.batcher.stats.batches - before_b}
            assert report[name]["service_scorer_calls"] <= sum(report[name]["requests_per_worker"]) <= len(items)
    for h in handles:
        ray.kill(h)
    # 40 rollouts finishing together: a few requests and scorer calls (3 / 3 when run alone; timing moves it)
    assert report["service_at_once"]["service_scorer_calls"] <= len(items) // 4
    (tmp_path / "agent_loop_batching.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
