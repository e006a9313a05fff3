"""Our verl plumbing against verl 0.9.1 itself, on CPU.

- the generated overrides compose against verl's own ``ppo_trainer.yaml`` and pass its ``validate_config``;
- our reward function loads through verl's own loader and scores a hand-built ``DataProto`` through
  ``RewardLoopWorker``, with the batching observed (one scorer call for many samples), in-process and via the
  service;
- our parquet goes through verl's ``RLHFDataset`` (with a real Qwen2-VL processor) and ``image_id`` reaches
  the reward.
"""
import asyncio
import os

import numpy as np
import pytest
import torch

from support.train_world import captions_for, config, index_dir, params_file, scorer, tiny_vl_model, world
from support.service_checks import Tripwire, assert_same_results, tripwire_scorer  # noqa: F401

import verl
from hydra import compose, initialize_config_dir

from cim.train.verl import reward as verl_reward
from cim.presets import list_presets, load_preset
from cim.train.verl.launch import build_overrides

VERL_CONFIG = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose_ppo(overrides):
    with initialize_config_dir(config_dir=VERL_CONFIG, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def our_overrides(*cim_overrides, service_url="", window_ms=500.0, **kwargs):
    cfg = config("train.verl.sft_checkpoint=/ckpt/sft", f"train.service.client_window_ms={window_ms}",
                 *cim_overrides)
    return build_overrides(cfg, train_files="/data/train.parquet", val_files="/data/val.parquet",
                           params_snapshot=str(params_file()), service_url=service_url, **kwargs)


# -- overrides ----------------------------------------------------------------------------------------
def test_presets_exist_for_the_papers_models():
    assert {"qwen2_5_vl_7b", "qwen2_vl_7b", "internvl2_8b", "internvl2_5_8b", "internvl3_8b",
            "llava1_5_7b"} <= set(list_presets())


@pytest.mark.parametrize("setting", ["base", "sft"])
def test_overrides_compose_and_validate_for_every_preset(setting):
    from verl.trainer.main_ppo import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    for preset in list_presets():
        c = compose_ppo(our_overrides(f"train.verl.preset={preset}", f"train.verl.setting={setting}"))
        validate_config(c, use_reference_policy=need_reference_policy(c), use_critic=need_critic(c))
        expected_model = "/ckpt/sft" if setting == "sft" else load_preset(preset)["model"]
        assert c.actor_rollout_ref.model.path == expected_model
        # the paper's settings
        assert c.algorithm.adv_estimator == "grpo" and c.actor_rollout_ref.rollout.n == 5
        assert c.data.train_batch_size == 256 and c.actor_rollout_ref.actor.ppo_mini_batch_size == 64
        optim = c.actor_rollout_ref.actor.optim
        assert optim.optimizer == "Adam" and optim.lr == 1e-6 and optim.weight_decay == 0.0
        assert c.trainer.total_epochs == 2 and list(c.trainer.logger) == ["console", "mlflow"]
        # the reward goes through the reward.-prefixed keys (the legacy top-level ones stay unset)
        assert c.reward.custom_reward_function.path == "pkg://cim.train.verl.reward"
        assert c.reward.custom_reward_function.name == "compute_score"
        assert c.reward.custom_reward_function.reward_kwargs.params == str(params_file())
        assert c.custom_reward_function.path is None
        assert c.reward.reward_manager.name == "naive"


def test_kl_choice():
    loss = compose_ppo(our_overrides("train.verl.kl=loss", "train.grpo.kl_coef=0.02"))
    assert loss.actor_rollout_ref.actor.use_kl_loss and loss.actor_rollout_ref.actor.kl_loss_coef == 0.02
    assert not loss.algorithm.use_kl_in_reward
    reward = compose_ppo(our_overrides("train.verl.kl=reward"))
    assert reward.algorithm.use_kl_in_reward and not reward.actor_rollout_ref.actor.use_kl_loss
    none = compose_ppo(our_overrides("train.verl.kl=none"))
    assert not none.algorithm.use_kl_in_reward and not none.actor_rollout_ref.actor.use_kl_loss


def test_gdpo_sets_verls_estimator_on_the_reward_terms_and_nothing_else_changes():
    from verl.trainer.main_ppo import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    plain = our_overrides()
    assert not [o for o in plain if "algorithm.gdpo" in o] and "algorithm.adv_estimator=grpo" in plain
    assert our_overrides("reward.guards=[repetition]") == plain          # guards alone: one summed score
    gdpo = our_overrides("reward.aggregate=gdpo", "reward.guards=[repetition,length]",
                         "reward.guard.length.weight=0.25", "reward.beta=0.5")
    assert [o for o in gdpo if o not in plain] == [
        "algorithm.adv_estimator=gdpo", "+algorithm.gdpo_reward_keys=[grc,qir,guard_repetition,guard_length]",
        "+algorithm.gdpo_reward_weights=[1.0,0.5,1.0,0.25]"]
    c = compose_ppo(gdpo)
    validate_config(c, use_reference_policy=need_reference_policy(c), use_critic=need_critic(c))
    assert c.algorithm.adv_estimator == "gdpo"
    assert list(c.algorithm.gdpo_reward_keys) == ["grc", "qir", "guard_repetition", "guard_length"]
    assert list(c.algorithm.gdpo_reward_weights) == [1.0, 0.5, 1.0, 0.25]
    grc_only = compose_ppo(our_overrides("reward.aggregate=gdpo", "reward.mode=grc"))
    assert list(grc_only.algorithm.gdpo_reward_keys) == ["grc"]


def test_service_url_and_extra_overrides_land():
    c = compose_ppo(our_overrides("train.verl.extra=[trainer.save_freq=7]", service_url="http://127.0.0.1:8750"))
    assert c.reward.custom_reward_function.reward_kwargs.service_url == "http://127.0.0.1:8750"
    assert c.trainer.save_freq == 7


# -- reward function through verl's loader and RewardLoopWorker ----------------------------------------
def _worker_config(service_url=""):
    ov = our_overrides(service_url=service_url) + [f"actor_rollout_ref.model.path={tiny_vl_model()}"]
    return compose_ppo(ov)


def _rollouts(worker, rows_items, n=1):
    """A DataProto as the rollout produces it: prompts, responses, attention mask, and the dataset's fields."""
    from verl import DataProto

    tok = worker.input_tokenizer
    prompt_len, resp_len = 8, 24
    prompts, responses, masks, non_tensor = [], [], [], {"data_source": [], "reward_model": [],
                                                          "extra_info": [], "uid": []}
    for i, (extra, caption) in enumerate(rows_items):
        ids = tok(caption, add_special_tokens=False)["input_ids"][:resp_len - 1] + [tok.eos_token_id]
        resp = ids + [tok.pad_token_id] * (resp_len - len(ids))
        prompts.append([tok.pad_token_id] * prompt_len)
        responses.append(resp)
        masks.append([1] * prompt_len + [1] * len(ids) + [0] * (resp_len - len(ids)))
        non_tensor["data_source"].append("cim_caption")
        non_tensor["reward_model"].append({"style": "model", "ground_truth": extra.get("image_id")})
        non_tensor["extra_info"].append(dict(extra))
        non_tensor["uid"].append(f"u{i // n}")
    return DataProto.from_dict(
        tensors={"prompts": torch.tensor(prompts), "responses": torch.tensor(responses),
                 "attention_mask": torch.tensor(masks)},
        non_tensors={k: np.array(v, dtype=object) for k, v in non_tensor.items()})


def _run(worker, data):
    return worker.loop.run_until_complete(worker.compute_score_batch(data))


def _check_outputs(outputs, items):
    keys = list(outputs[0]["reward_extra_info"].keys())
    assert set(keys) == set(verl_reward.KEYS)
    for out in outputs:   # verl stacks extras by the first sample's keys: every sample must have them all
        assert list(out["reward_extra_info"].keys()) == keys
    direct = scorer().score(items)
    for out, d in zip(outputs, direct):
        assert out["reward_score"] == pytest.approx(d["score"], abs=1e-5)
        assert out["reward_extra_info"]["grc"] == pytest.approx(d["grc"], abs=1e-5)
        assert out["reward_extra_info"]["qir"] == pytest.approx(d["qir"], abs=1e-5)
        assert out["reward_extra_info"]["failed"] == 0.0


def test_reward_fn_in_process_one_scorer_call_for_many_samples():
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    index_dir()                                              # the tiny index exists
    worker = RewardLoopWorker(_worker_config())
    assert isinstance(worker.reward_manager, NaiveRewardManager)
    assert worker.reward_manager.is_async_reward_score       # our async function was detected
    items = captions_for(world()["rows"][:15])
    data = _rollouts(worker, [({"image_id": it["image_id"], "split": "train"}, it["caption"]) for it in items], n=5)
    in_process = verl_reward._SCORERS.get(str(params_file()))   # built from the params file by the function
    before = in_process.calls if in_process is not None else 0  # itself (or by an earlier test)
    outputs = _run(worker, data)
    _check_outputs(outputs, items)
    in_process = verl_reward._SCORERS[str(params_file())]
    assert in_process.calls - before == 1, f"15 samples took {in_process.calls - before} scorer calls"
    # verl assembles the token-level reward from our scores (last valid response token)
    rm = NaiveRewardManager.assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    assert rm.sum(dim=1).tolist() == pytest.approx([o["reward_score"] for o in outputs], abs=1e-5)


def test_reward_fn_via_service_and_failures_by_kind():
    from cim.service.server import RewardService, ServerHandle, build_app
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    service = RewardService(scorer(), max_batch=4096, window_s=0.0)
    with ServerHandle(build_app(service)) as handle:
        worker = RewardLoopWorker(_worker_config(service_url=handle.url))
        items = captions_for(world()["rows"][1:13])
        data = _rollouts(worker, [({"image_id": it["image_id"]}, it["caption"]) for it in items])
        before = verl_reward.stats()
        outputs = _run(worker, data)
        _check_outputs(outputs, items)
        assert verl_reward.stats()["batches"] - before["batches"] == 1
        assert service.batcher.stats.batches == 1 and service.batcher.stats.items == len(items)

        # an empty caption is the captioner's fault: the floor (fallback_score), failed=1, same keys
        before_failed = verl_reward.stats()
        out_bad = _run(worker, _rollouts(worker, [({"image_id": items[0]["image_id"]}, "")]))
        assert out_bad[0]["reward_score"] == 0.0 and set(out_bad[0]["reward_extra_info"]) == set(verl_reward.KEYS)
        assert out_bad[0]["reward_extra_info"]["failed"] == 1.0
        assert out_bad[0]["reward_extra_info"]["reward_system_failed"] == 0.0
        assert verl_reward.stats()["caption_failed"] - before_failed["caption_failed"] == 1
        # an image id the index does not know is not the caption's fault: the step is told (on_failure=raise)
        with pytest.raises(verl_reward.RewardSystemError, match="no-such-image.*not at fault"):
            _run(worker, _rollouts(worker, [({"image_id": "no-such-image"}, "a red circle")]))
        assert verl_reward.stats()["reward_system_failed"] - before_failed["reward_system_failed"] == 1
        url = handle.url
    # the service is gone: after the retries, the failure is the reward system's, never a 0.0 for the caption
    worker = RewardLoopWorker(_worker_config(service_url=url))
    cfg = worker.config.reward.custom_reward_function.reward_kwargs
    assert cfg.retries == 3
    from omegaconf import open_dict
    with open_dict(worker.config):
        worker.config.reward.custom_reward_function.reward_kwargs.retries = 0
    worker._init_reward_fn()
    rollouts = _rollouts(worker, [({"image_id": items[0]["image_id"]}, "a red circle")] * 3)
    with pytest.raises(verl_reward.RewardSystemError, match="Cannot connect|ServiceError"):
        _run(worker, rollouts)
    with open_dict(worker.config):      # on_failure=neutral: one constant for every failed sample
        worker.config.reward.custom_reward_function.reward_kwargs.on_failure = "neutral"
        worker.config.reward.custom_reward_function.reward_kwargs.neutral_score = 1.5
    worker._init_reward_fn()
    out = _run(worker, rollouts)
    assert [o["reward_score"] for o in out] == [1.5] * 3
    assert all(o["reward_extra_info"]["failed"] == o["reward_extra_info"]["reward_system_failed"] == 1.0
               for o in out)


def _verl_scores(requests, return_exceptions=False, **kwargs):
    """verl's per-rollout calls of compute_score, concurrent in one event loop (as a reward worker makes them)."""
    async def main():
        return await asyncio.gather(*(verl_reward.compute_score("cim_caption", it["caption"], it["image_id"],
                                                                {"image_id": it["image_id"]}, **kwargs)
                                      for it in requests), return_exceptions=return_exceptions)

    return asyncio.run(main())


def test_one_item_gives_the_same_result_on_every_path():
    """Scorer, service via both clients, verl's function in-process and via the service: key by key.

    Before: the service dropped ``truncated`` (so verl's truncated monitor read 0 through the service)."""
    from cim.reward.schema import NUMERIC_KEYS
    from cim.service.client import AsyncRewardClient, RewardClient
    from cim.service.server import RewardService, ServerHandle, build_app

    row = world()["rows"][5]
    items = [{"caption": row["text"], "image_id": row["id"]},
             {"caption": (row["text"] + " with") * 1500, "image_id": row["id"]}]      # > 20,000 chars: cut
    want = scorer().score(items)
    assert want[1]["truncated"] is True and want[0]["source_rank"] == 1
    with ServerHandle(build_app(RewardService(scorer(), window_s=0.0))) as handle:
        with RewardClient(handle.url) as client:
            assert_same_results(client.score(items), want)

        async def via_async():
            client = AsyncRewardClient(handle.url)
            try:
                return await client.score(items)
            finally:
                await client.aclose()

        assert_same_results(asyncio.run(via_async()), want)
        via_service = _verl_scores(items, service_url=handle.url)
    in_process = _verl_scores(items, params=str(params_file()))
    for w, it in zip(want, items):
        expected = {k: float(w[k] or 0) for k in NUMERIC_KEYS}
        expected.update(failed=0.0, reward_system_failed=0.0, source_retrieved=1.0 if w["source_rank"] else 0.0,
                        caption_len=float(len(it["caption"].split())), caption_chars=float(len(it["caption"])))
        for got in (via_service.pop(0), in_process.pop(0)):
            assert list(got) == list(verl_reward.KEYS)
            assert got == pytest.approx(expected, abs=1e-6)


def _guarded_params(tmp_path, *reward):
    """The tiny world's params with guard terms (and GDPO): its in-process scorer shares the session's encoder."""
    from cim.config import load_config
    from cim.reward.scorer import Scorer

    text = params_file().read_text()
    path = tmp_path / "guarded.yaml"
    path.write_text(text.replace("reward: {top_k: 3, exclude_source: true}",
                                 "reward: {top_k: 3, exclude_source: true, " + ", ".join(reward) + "}"))
    assert path.read_text() != text
    guarded = Scorer.from_config(load_config(path), text_encoder=scorer().text_encoder)
    verl_reward._SCORERS[str(path)] = guarded
    return path, guarded


def test_guard_terms_reach_verl_and_its_gdpo_finds_them(tmp_path):
    """Every sample carries guard_<name> (0 on a failure, the same keys always); verl's own GDPO, configured
    by our overrides, reads them with GRC and QIR; a service scoring without the guards is the reward system's
    failure, not a 0 for the caption."""
    from verl.trainer.ppo import core_algos

    from cim.service.server import RewardService, ServerHandle, build_app

    path, guarded = _guarded_params(tmp_path, "guards: [repetition, length]", "aggregate: gdpo")
    items = captions_for(world()["rows"][:6]) + [{"caption": "a red red red red circle circle circle circle",
                                                   "image_id": world()["rows"][0]["id"]},
                                                  {"caption": "", "image_id": world()["rows"][1]["id"]}]
    try:
        out = _verl_scores(items, params=str(path))
        with ServerHandle(build_app(RewardService(scorer(), window_s=0.0))) as handle:   # no guards there
            wrong = _verl_scores(items[:1], True, params=str(path), service_url=handle.url)
    finally:
        del verl_reward._SCORERS[str(path)]
    keys = list(verl_reward.KEYS) + ["guard_repetition", "guard_length"]
    assert all(list(o) == keys for o in out)
    want = guarded.score(items[:-1])
    for o, w in zip(out, want):
        assert o["guard_repetition"] == w["guards"]["repetition"] and o["guard_length"] == w["guards"]["length"]
        assert o["upsilon"] == pytest.approx(w["upsilon"], abs=1e-6) and o["score"] == pytest.approx(w["score"])
    assert out[6]["guard_repetition"] < 0 and out[6]["score"] < out[6]["upsilon"]
    assert out[7]["failed"] == 1.0 and out[7]["guard_repetition"] == out[7]["grc"] == out[7]["upsilon"] == 0.0
    assert isinstance(wrong[0], verl_reward.RewardSystemError) and "guard_repetition" in str(wrong[0])

    # verl stacks the extras into non_tensor_batch; its GDPO with the algorithm config our overrides compose
    c = compose_ppo(our_overrides("reward.aggregate=gdpo", "reward.guards=[repetition,length]"))
    non_tensor = {k: np.array([o[k] for o in out]) for k in keys}
    mask = torch.ones(len(out), 4)
    batch = {"prompts": torch.zeros(len(out), 2, dtype=torch.long),
             "attention_mask": torch.ones(len(out), 6, dtype=torch.long)}
    adv, _ = core_algos.get_adv_estimator_fn(c.algorithm.adv_estimator)(
        token_level_rewards=torch.zeros_like(mask), response_mask=mask, config=c.algorithm,
        index=np.array(["a"] * 4 + ["b"] * 4, dtype=object), non_tensor_batch=non_tensor, batch=batch)
    assert torch.isfinite(adv).all() and adv.abs().sum() > 0


def test_a_poisoned_rollout_fails_alone_and_the_others_are_scored_as_without_it(tmp_path):
    """Before: in-process, one lone-surrogate caption gave all 16 rollouts of its batch the fallback score.
    A caption that is no text gets the floor; a caption that makes the scorer raise is a reward-system
    failure (raised, on_failure=raise), not a 0.0 for the caption. Either way the others are unaffected."""
    from cim.service.server import RewardService, ServerHandle, build_app

    good = captions_for(world()["rows"][:15])
    want = scorer().score(good)
    poison = [{"caption": "\ud800 x", "image_id": good[0]["image_id"]}]
    trip = [{"caption": "a TRIPWIRE", "image_id": good[0]["image_id"]}]
    trip_params = tmp_path / "tripwire.yaml"                     # a params file whose in-process scorer is
    trip_params.write_bytes(params_file().read_bytes())          # the tripwire: a fault the scorer's validation
    verl_reward._SCORERS[str(trip_params)] = tripwire_scorer()   # misses
    try:
        with ServerHandle(build_app(RewardService(tripwire_scorer(), window_s=0.0))) as handle:
            runs = {"in-process": _verl_scores(good + poison, True, params=str(params_file())),
                    "in-process, scorer raises": _verl_scores(trip + good, True, params=str(trip_params),
                                                              on_failure="raise", neutral_score=0.0),
                    "service": _verl_scores(poison + good, True, service_url=handle.url),
                    "service, scorer raises": _verl_scores(good + trip, True, service_url=handle.url)}
    finally:
        del verl_reward._SCORERS[str(trip_params)]
    for name, out in runs.items():
        bad = [o for o in out if isinstance(o, BaseException) or o["failed"]]
        assert len(bad) == 1, name
        if "raises" in name:
            assert isinstance(bad[0], verl_reward.RewardSystemError), name
        else:
            assert bad[0]["score"] == 0.0 and bad[0]["reward_system_failed"] == 0.0, name
        scored = [o for o in out if not isinstance(o, BaseException) and not o["failed"]]
        assert [o["score"] for o in scored] == pytest.approx([w["score"] for w in want], abs=1e-6), name
        assert [o["qir"] for o in scored] == pytest.approx([w["qir"] for w in want], abs=1e-6), name


# -- parquet -> RLHFDataset -> reward --------------------------------------------------------------------
def test_parquet_through_rlhfdataset_and_image_id_reaches_the_reward(tmp_path):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
    from verl import DataProto

    from cim.train.verl.data import prepare_train

    index_dir()
    cfg = config(f"train.data_dir={tmp_path}")
    info = prepare_train(cfg)
    assert info["train_rows"] == len(world()["train_rows"])      # every row trains (val is a sample of them)
    vcfg = _worker_config()
    tokenizer = hf_tokenizer(str(tiny_vl_model()))
    processor = hf_processor(str(tiny_vl_model()))
    assert type(processor).__name__ == "Qwen2VLProcessor"
    from omegaconf import open_dict

    data_cfg = vcfg.data.copy()
    with open_dict(data_cfg):
        data_cfg.cache_dir = str(tmp_path / "cache")
        data_cfg.filter_overlong_prompts_workers = 1
    ds = RLHFDataset(info["train_files"], tokenizer, data_cfg, processor=processor)
    assert len(ds) == info["train_rows"]          # the overlong filter ran the processor on every image
    rows = [ds[i] for i in range(len(ds))]
    assert rows[0]["raw_prompt"][0]["content"][0]["type"] == "image"
    assert rows[0]["raw_prompt"][0]["content"][1]["text"] == cfg.train.prompt
    batch = DataProto.from_single_dict(collate_fn(rows))
    ids = [e["image_id"] for e in batch.non_tensor_batch["extra_info"]]
    assert ids == [r["reward_model"]["ground_truth"] for r in rows]
    assert set(ids) <= {r["id"] for r in world()["train_rows"]}

    # rollouts for these rows: the caption of each row's own image, n=2 per prompt; the reward must use the
    # row's image id (a caption scored against another image would score differently)
    worker = RewardLoopWorker(vcfg)
    text_of = {r["id"]: r["text"] for r in world()["rows"]}
    extras = list(batch.non_tensor_batch["extra_info"])
    pairs = [(e, text_of[e["image_id"]]) for e in extras for _ in range(2)]
    outputs = _run(worker, _rollouts(worker, pairs, n=2))
    expected = scorer().score([{"caption": c, "image_id": e["image_id"]} for e, c in pairs])
    assert [o["reward_score"] for o in outputs] == pytest.approx([x["score"] for x in expected], abs=1e-5)
    shifted = scorer().score([{"caption": c, "image_id": pairs[(i + 2) % len(pairs)][0]["image_id"]}
                              for i, (_, c) in enumerate(pairs)])
    assert [o["reward_score"] for o in outputs] != pytest.approx([x["score"] for x in shifted], abs=1e-5)
