"""The local trainer: SFT warm-up, then GRPO with the CIM reward and verl's own maths; checkpoints; resume.

1. SFT: teacher forcing on (caption, image features) pairs (:func:`cim.train.local.examples.sft_pairs`).
2. GRPO on the training images: ``train.grpo.group_size`` sampled captions per image, rewarded by the
   :class:`cim.reward.scorer.Scorer` (one batched call per step); verl's ``core_algos`` for the group
   advantage (``compute_grpo_outcome_advantage``), the clipped policy loss (``vanilla``), the KL penalty
   (``kl_penalty``) and the aggregation (``agg_loss``, token-mean). Reference policy = the SFT model; Adam
   without weight decay.
3. Every ``eval_every`` steps and at step 0 a greedy evaluation on held-out images: reward, GRC, QIR and
   ground-truth recall (:mod:`cim.eval.world_truth`).
4. Checkpoints (:mod:`cim.train.local.checkpoints`) every ``save_every`` GRPO steps and ``5 * save_every``
   SFT steps, each holding the metric history (:mod:`cim.train.local.history`); a rerun resumes from the
   newest in either phase and ends with the same checkpoints, history and reports as an uninterrupted run.
5. The sentinels (:mod:`cim.train.sentinels`, ``train.sentinels``) watch every GRPO step's rollouts (their
   ``sentinel/*`` metrics go to MLflow only); a trip with ``on_trip: stop`` checkpoints that step and raises
   :class:`cim.errors.SentinelTripped`.
"""
from __future__ import annotations

import copy
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from cim.determinism import deterministic
from cim.io import write_jsonl
from cim.train.local.checkpoints import (SFT_FINAL, config_fingerprint, grpo_name, load_checkpoint, load_latest,
                                         save_checkpoint, sft_compatible)
from cim.reward.text import distinct_n
from cim.train.local.examples import read_rows, rows_with_features, sft_pairs
from cim.train.local.history import RunHistory
from cim.train.local.model import Captioner, build_tiny_lm, load_smollm2
from cim.train.local.tokenizers import WordTokenizer
from cim.train.sentinels import Sentinels


class LocalTrainer:
    def __init__(self, cfg, scorer=None, progress: bool = True):
        self.cfg, self.lc, self.progress = cfg, cfg.train.local, progress
        if scorer is None:
            from cim.reward.scorer import Scorer

            scorer = Scorer.from_config(cfg)
        self.scorer = scorer
        self.index = scorer.index
        self.out = Path(self.lc.out_dir)
        # where the SFT start lives: this folder, or another run's (train.local.sft_dir: GRPO only here)
        self.sft_source = Path(self.lc.sft_dir) if self.lc.sft_dir else self.out
        if self.lc.sft_dir and not (self.sft_source / SFT_FINAL).is_dir():
            raise FileNotFoundError(f"train.local.sft_dir={self.lc.sft_dir}: no {SFT_FINAL}/ in it; "
                                    "train the SFT start first")
        self.out.mkdir(parents=True, exist_ok=True)
        for leftover in self.out.glob(".*.tmp"):       # a checkpoint or file half-written when a run was killed
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        self.train_rows, feats = rows_with_features(self.index, read_rows(cfg.train.manifest))
        self.train_feats = torch.from_numpy(feats)
        self.eval_rows, self.eval_feats = [], None
        if self.lc.eval_manifest and Path(self.lc.eval_manifest).exists():
            self.eval_rows, ef = rows_with_features(self.index, read_rows(self.lc.eval_manifest)[: self.lc.n_eval])
            self.eval_feats = torch.from_numpy(ef)
        self.sft_texts, sft_feats = sft_pairs(cfg, self.index)
        self.sft_feats = torch.from_numpy(sft_feats)
        if self.lc.lm == "tiny":
            vocab_file = self.out / "tokenizer.json"
            if (self.sft_source / "tokenizer.json").exists():     # the SFT start's vocabulary, kept beside
                self.tok = WordTokenizer.load(self.sft_source / "tokenizer.json")
                if not vocab_file.exists():
                    self.tok.save(vocab_file)
            else:
                self.tok = WordTokenizer.build(self.sft_texts)
                self.tok.save(vocab_file)
            lm = build_tiny_lm(self.lc, len(self.tok))
        else:
            lm, self.tok = load_smollm2()
        self.policy = Captioner(self.train_feats.shape[1], lm, self.lc.n_prefix)
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        self.rng = random.Random(int(cfg.seed))
        self.history = RunHistory()
        self.on_checkpoint: Callable[[], None] = lambda: None    # run_local: send the history to MLflow
        self.sentinels = Sentinels.from_config(cfg, self.scorer.score)   # None: train.sentinels.enabled=false

    # -- resume ---------------------------------------------------------------------------------------------
    def latest_state(self) -> Optional[dict]:
        """The newest checkpoint of this folder (None: start afresh); refuses another configuration's."""
        state = load_latest(self.out)
        if state is not None and state.get("fingerprint") != config_fingerprint(self.cfg):
            raise RuntimeError(f"{self.out} holds checkpoints of a different configuration; "
                               "use another train.local.out_dir or delete it")
        return state

    def _restore(self, state: dict) -> None:
        self.policy.load_state_dict(state["model"])
        self.rng.setstate(state["rng"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.history = RunHistory(state.get("history", []))
        if self.sentinels is not None:    # length_ratio's base: GRPO step 1's mean length (= train/caption_len)
            self.sentinels.base_length = next((r["metrics"]["train/caption_len"] for r in self.history.records
                                               if "train/caption_len" in r["metrics"]), None)

    def _checkpoint(self, phase: str, step: int, optim, name: Optional[str] = None) -> Path:
        state = {"phase": phase, "step": step, "model": self.policy.state_dict(), "optim": optim.state_dict(),
                 "rng": self.rng.getstate(), "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                 "fingerprint": config_fingerprint(self.cfg), "history": self.history.state()}
        path = save_checkpoint(self.out, name or f"{phase}_{step:05d}", state)
        self.on_checkpoint()
        return path

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self, state: Optional[dict] = None) -> dict:
        """SFT (unless done) then GRPO, from ``state`` (a checkpoint, see :meth:`latest_state`) or the start.
        Returns the summary: the SFT-start and final evaluations. Runs under :func:`cim.determinism.
        deterministic` (seed, ``train.local.threads``): the same inputs give the same bytes on any run."""
        with deterministic(int(self.cfg.seed), int(self.lc.threads)):
            return self._run(state)

    def _run(self, state: Optional[dict]) -> dict:
        lc = self.lc
        if state is None and self.lc.sft_dir:      # GRPO from another folder's SFT start
            state = load_checkpoint(self.sft_source, SFT_FINAL)
            if not sft_compatible(state, self.cfg):
                raise RuntimeError(f"{self.sft_source / SFT_FINAL} is the SFT start of another configuration "
                                   "(model, SFT settings, index or seed differ)")
        phase, step = ("sft", 0) if state is None else (state["phase"], state["step"])
        if state is not None:
            self._restore(state)
            print(f"resuming from {phase} step {step}", file=sys.stderr, flush=True)
        if phase == "sft":
            sft_opt = torch.optim.AdamW(self.policy.parameters(), lr=lc.sft_lr, weight_decay=0.0)
            if state is not None and step < lc.sft_steps:
                sft_opt.load_state_dict(state["optim"])
            if step < lc.sft_steps or not (self.sft_source / SFT_FINAL).exists():
                self.sft(step, sft_opt)
            phase, step, state = "grpo", 0, None
        ref = copy.deepcopy(self.policy)
        ref.load_state_dict(load_checkpoint(self.sft_source, SFT_FINAL)["model"])
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        optim = torch.optim.Adam(self.policy.parameters(), lr=lc.lr, weight_decay=0.0)
        if state is not None:
            optim.load_state_dict(state["optim"])
        if step == 0:                   # GRPO starts here: its own seed (the SFT start is shared by all seeds)
            self.rng = random.Random(int(lc.grpo_seed))
            self.gen.manual_seed(int(lc.grpo_seed))
            torch.manual_seed(int(lc.grpo_seed))
            self.evaluate(0)
        self.grpo(step, optim, ref)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        evals = {e["step"]: {k: v for k, v in e.items() if k != "step"} for e in self.history.evaluations()}
        # metrics only (DVC reads it as metrics): the step count is a config value, in params
        return {"sft_eval": evals.get(0, {}), "final_eval": evals.get(self.lc.grpo_steps, {})}

    # -- SFT --------------------------------------------------------------------------------------------------
    def _batch_tokens(self, texts: Sequence[str]):
        L = self.lc.max_new_tokens
        ids = [self.tok.encode(t)[: L - 1] + [self.tok.eos_id] for t in texts]
        resp = torch.full((len(ids), max(len(i) for i in ids)), self.tok.pad_id, dtype=torch.long)
        mask = torch.zeros(resp.shape, dtype=torch.float32)
        for k, i in enumerate(ids):
            resp[k, :len(i)] = torch.tensor(i)
            mask[k, :len(i)] = 1
        return resp, mask

    def _bar(self, total: int, initial: int, desc: str):
        from tqdm.auto import tqdm

        # in a log (not a terminal) one line a second, not ten
        return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not self.progress,
                    file=sys.stderr, dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 1.0)

    def sft(self, start_step: int, optim) -> None:
        lc = self.lc
        n = len(self.sft_texts)
        with self._bar(lc.sft_steps, start_step, "SFT warm-up") as bar:
            for step in range(start_step, lc.sft_steps):
                idx = [self.rng.randrange(n) for _ in range(lc.sft_batch)]
                resp, mask = self._batch_tokens([self.sft_texts[i] for i in idx])
                lp = self.policy.log_probs(self.sft_feats[idx], resp, self.tok.bos_id)
                loss = -(lp * mask).sum() / mask.sum()
                optim.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
                optim.step()
                done = step + 1
                bar.update(1)
                if done % 20 == 0 or done == lc.sft_steps:
                    self.history.add(done, {"sft/loss": float(loss.detach())})
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                if done % max(1, lc.save_every * 5) == 0 and done < lc.sft_steps:
                    self._checkpoint("sft", done, optim)
        self._checkpoint("sft", lc.sft_steps, optim, name=SFT_FINAL)

    # -- evaluation ---------------------------------------------------------------------------------------
    def _score(self, captions: Sequence[str], ids: Sequence[str]) -> list[dict]:
        return self.scorer.score([{"caption": c, "image_id": i} for c, i in zip(captions, ids)])

    def evaluate(self, step: int, tag: str = "eval") -> dict:
        """Greedy captions for the held-out images: reward and ground-truth recall (also into the history)."""
        from cim.eval.world_truth import scene_recall

        if self.eval_feats is None or not self.eval_rows:
            return {}
        self.policy.eval()
        resp, _ = self.policy.sample(self.eval_feats, self.tok.bos_id, self.tok.eos_id, self.tok.pad_id,
                                     self.lc.max_new_tokens, 1.0, greedy=True)
        caps = [self.tok.decode(r.tolist()) for r in resp]
        scored = self._score(caps, [r["id"] for r in self.eval_rows])
        metrics: dict[str, list[float]] = {"reward": [], "grc": [], "qir": []}
        for s in scored:
            if s.get("error") is None:
                for k in ("reward", "grc", "qir"):
                    metrics[k].append(s["score" if k == "reward" else k])
        for row, cap in zip(self.eval_rows, caps):
            scene = row.get("scene_graph")
            if scene:
                for k, v in scene_recall(cap, scene).items():
                    if not math.isnan(v):
                        metrics.setdefault(k, []).append(v)
        out = {f"{tag}/{k}": float(np.mean(v)) for k, v in metrics.items() if v}
        out[f"{tag}/caption_len"] = float(np.mean([len(c.split()) for c in caps]))
        out[f"{tag}/distinct_2"] = distinct_n(caps, 2)
        self.history.add(step, out)
        write_jsonl(({"id": row["id"], "caption": cap, "reference": row.get("reference"), "score": s.get("score")}
                     for row, cap, s in zip(self.eval_rows, caps, scored)),
                    self.out / "samples" / f"{tag}_{step:05d}.jsonl")
        self.policy.train()
        return out

    # -- GRPO -----------------------------------------------------------------------------------------------
    def grpo(self, start_step: int, optim, ref) -> None:
        from verl.trainer.ppo import core_algos
        from verl.workers.config import ActorConfig

        lc = self.lc
        actor_cfg = ActorConfig(strategy="fsdp", clip_ratio=lc.clip_ratio, ppo_mini_batch_size=lc.prompts_per_step,
                                ppo_micro_batch_size_per_gpu=lc.prompts_per_step * self.cfg.train.grpo.group_size,
                                rollout_n=self.cfg.train.grpo.group_size, loss_agg_mode="token-mean")
        policy_loss = core_algos.get_policy_loss_fn("vanilla")
        with self._bar(lc.grpo_steps, start_step, "GRPO") as bar:
            for step in range(start_step, lc.grpo_steps):
                t0 = time.perf_counter()
                m = self.grpo_step(step, optim, ref, core_algos, policy_loss, actor_cfg)
                done = step + 1
                self.history.add(done, m, timing={"train/step_s": time.perf_counter() - t0})
                if done % lc.eval_every == 0 or done == lc.grpo_steps:
                    self.evaluate(done)
                saved = done % lc.save_every == 0 or done == lc.grpo_steps
                if saved:
                    self._checkpoint("grpo", done, optim, name=grpo_name(done))
                if self.sentinels is not None:
                    self._watch(done, m, optim, saved)
                bar.update(1)
                bar.set_postfix(reward=f"{m['train/reward_mean']:.3f}", kl=f"{m['train/kl']:.4f}",
                                len=f"{m['train/caption_len']:.1f}")

    def _watch(self, done: int, metrics: dict, optim, saved: bool) -> None:
        """The sentinels' trips at GRPO step ``done``; with ``on_trip: stop``: checkpoint, then stop."""
        from cim.errors import SentinelTripped

        trips = self.sentinels.trips(done, metrics)
        if trips and self.sentinels.stops:
            path = self.out / grpo_name(done) if saved else self._checkpoint("grpo", done, optim, name=grpo_name(done))
            raise SentinelTripped("; ".join(t.line() for t in trips) + f"; training stopped after checkpoint {path} "
                                  "(train.sentinels.on_trip=stop)", trips, str(path))

    def grpo_step(self, step: int, optim, ref, core_algos, policy_loss, actor_cfg) -> dict[str, float]:
        """One GRPO step: sample groups, score them in one call, verl's advantage and losses, one update."""
        lc = self.lc
        picks = [self.rng.randrange(len(self.train_rows)) for _ in range(lc.prompts_per_step)]
        idx = [p for p in picks for _ in range(self.cfg.train.grpo.group_size)]
        feats = self.train_feats[idx]
        ids = [self.train_rows[i]["id"] for i in idx]
        uids = np.array([f"{step}-{k}" for k in range(lc.prompts_per_step) for _ in range(self.cfg.train.grpo.group_size)],
                        dtype=object)
        self.policy.eval()
        resp, mask = self.policy.sample(feats, self.tok.bos_id, self.tok.eos_id, self.tok.pad_id,
                                        lc.max_new_tokens, self.cfg.train.grpo.temperature, generator=self.gen)
        self.policy.train()
        caps = [self.tok.decode(r.tolist()) for r in resp]
        scored = self._score(caps, ids)
        t_watch = time.perf_counter()
        watched = {} if self.sentinels is None else self.sentinels.observe(step + 1, caps, ids, scored)
        if watched:
            watched["sentinel/seconds"] = time.perf_counter() - t_watch
        fallback = float(self.cfg.train.service.fallback_score)
        rewards = torch.tensor([s["score"] if s.get("error") is None else fallback for s in scored])
        failed = sum(1 for s in scored if s.get("error") is not None)
        # verl's outcome reward: the scalar sits on the last valid response token
        last = (mask.sum(dim=1).long() - 1).clamp(min=0)
        token_rewards = torch.zeros_like(mask)
        token_rewards[torch.arange(len(idx)), last] = rewards
        if self.cfg.reward.aggregate == "gdpo":     # each reward term normalised in its group, then summed
            advantages = gdpo_advantages(core_algos, self.cfg.reward, scored, token_rewards, mask, uids)
        else:
            advantages, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, uids)
        with torch.no_grad():
            old_lp = self.policy.log_probs(feats, resp, self.tok.bos_id, self.cfg.train.grpo.temperature)
            ref_lp = ref.log_probs(feats, resp, self.tok.bos_id, self.cfg.train.grpo.temperature)
        lp = self.policy.log_probs(feats, resp, self.tok.bos_id, self.cfg.train.grpo.temperature)
        pg_loss, pg_metrics = policy_loss(old_lp, lp, advantages, mask, "token-mean", actor_cfg)
        kl = core_algos.kl_penalty(lp, ref_lp, self.cfg.train.grpo.kl_type)
        kl_loss = core_algos.agg_loss(kl, mask, "token-mean")
        loss = pg_loss + self.cfg.train.grpo.kl_coef * kl_loss
        optim.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
        optim.step()
        ok = [s for s in scored if s.get("error") is None]
        metrics = {
            "train/reward_mean": float(rewards.mean()), "train/reward_std": float(rewards.std()),
            "train/grc": float(np.mean([s["grc"] for s in ok])) if ok else float("nan"),
            "train/qir": float(np.mean([s["qir"] for s in ok])) if ok else float("nan"),
            "train/kl": float(kl_loss.detach()), "train/pg_loss": float(pg_loss.detach()),
            "train/grad_norm": float(grad_norm),
            "train/caption_len": float(np.mean([len(c.split()) for c in caps])),
            "train/response_tokens": float(mask.sum(dim=1).mean()),
            "train/distinct_1": distinct_n(caps, 1), "train/distinct_2": distinct_n(caps, 2),
            "train/source_retrieved": float(np.mean([1.0 if s.get("source_rank") else 0.0 for s in ok]))
            if ok else 0.0,
            "train/failed": float(failed),
            "train/pg_clipfrac": float(pg_metrics.get("actor/pg_clipfrac", 0.0)),
            **watched,           # sentinel/*: MLflow only (RunHistory keeps them out of checkpoints and reports)
        }
        metrics.update(guard_metrics(self.cfg.reward, ok))
        return metrics


def gdpo_advantages(core_algos, reward_cfg, scored: Sequence[dict], token_rewards, mask, uids):
    """verl's ``compute_gdpo_outcome_advantage`` on the reward's terms (:func:`cim.reward.guards.reward_terms`:
    GRC, QIR with weight β, each guard with its weight), each term's per-rollout values in ``non_tensor_batch``
    (0 for every term of a failed item, as verl's reward function gives them). verl puts a term on the last
    valid response token, ``attention_mask[:, prompt_len:].sum(1) - 1``: a one-token prompt ahead of the mask."""
    from verl.trainer.config import AlgoConfig

    from cim.reward.guards import reward_terms, term_value

    terms = reward_terms(reward_cfg)
    config = AlgoConfig(adv_estimator="gdpo", gdpo_reward_keys=[k for k, _ in terms],
                        gdpo_reward_weights=[float(w) for _, w in terms])
    values = {k: np.array([term_value(s, k) for s in scored], dtype=np.float32) for k, _ in terms}
    prompts = torch.zeros((len(scored), 1), dtype=torch.long)
    batch = {"prompts": prompts, "attention_mask": torch.cat([torch.ones_like(prompts), mask.long()], dim=1)}
    advantages, _ = core_algos.compute_gdpo_outcome_advantage(token_rewards, mask, uids, config=config,
                                                              non_tensor_batch=values, batch=batch)
    return advantages


def guard_metrics(reward_cfg, ok: Sequence[dict]) -> dict[str, float]:
    """``train/upsilon`` and ``train/guard_<name>`` (means over the scored rollouts), only with guards
    configured: without them the metric set stays as it was."""
    from cim.reward.guards import guard_keys, term_value

    keys = guard_keys(reward_cfg)
    if not keys:
        return {}
    return {f"train/{k}": float(np.mean([term_value(s, k) for s in ok])) if ok else float("nan")
            for k in ["upsilon", *keys]}
