"""The CIM reward as a TRL reward function: every rollout of a step is scored in one request to the reward
service (:class:`cim.service.client.RewardClient`), by its image's id (the dataset's ``image_id`` column).

TRL calls ``reward(prompts=, completions=, completion_ids=, image=, image_id=, log_metric=, ...)`` once per
generation batch. A caption that is no text gets ``train.service.fallback_score`` (counted as ``failed``); the
reward system failing (service down past the client's deadline, an unknown id) raises with
``reward.on_failure=raise`` and gives every sample ``reward.neutral_score`` with ``neutral`` (equal rewards:
advantage 0). GRC, QIR and the monitors go to TRL's step metrics as ``cim_reward/<key>/mean`` (the names of
:mod:`cim.train.verl.reward_metrics`). ``trace``: a jsonl path receiving one row per rollout (the id, a hash
of the image the policy was shown, the caption, the score), for audits and the tests.

With guard terms or ``reward.aggregate=gdpo`` TRL gets several reward functions
(:func:`cim.train.trl.settings.reward_terms`, their weights in ``GRPOConfig.reward_weights``): the first,
:class:`CimReward`, scores the batch (one request) and returns its term; each :class:`RewardTerm` after it
returns another term of the same batch's results, never scoring again. Υ (``upsilon``, or ``score`` without
guards) is ``rewards/cim``; the others are named by their key (``rewards/guard_<name>``, ``rewards/grc``...).
A failed rollout's terms are 0 (its Υ the floor or neutral score, as its score).
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from cim.reward.guards import TERM_PREFIX, term_value
from cim.service.client import RewardClient, read_token

METRIC_KEYS = ("score", "grc", "qir", "source_retrieved", "failed", "reward_system_failed", "caption_len")


def image_hash(image) -> str:
    """A hash of an image's RGB pixels (what the policy saw, whatever the file's encoding)."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()[:16]


def _caption(completion: Any) -> str:
    if isinstance(completion, list):   # conversational: [{"role": "assistant", "content": ...}]
        content = completion[-1].get("content") if completion else ""
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content or ""
    return str(completion)


def _prompt_images(prompt: Any) -> list:
    if not isinstance(prompt, list):
        return []
    return [part["image"] for turn in prompt if isinstance(turn.get("content"), list)
            for part in turn["content"] if isinstance(part, dict) and part.get("type") == "image" and "image" in part]


class CimReward:
    """A TRL reward function (``__name__`` ``cim``: TRL's metrics are ``rewards/cim/mean`` and ``/std``)."""

    __name__ = "cim"

    def __init__(self, url: str, *, token_env: str, timeout_s: float, retries: int, deadline_s: float,
                 fallback_score: float, on_failure: str, neutral_score: float, trace: Optional[str | Path] = None,
                 key: str = "score", guards: Sequence[str] = ()):
        """Every setting from the config (:meth:`from_config`): the schema holds their defaults. ``key``: the
        term this function returns; ``guards``: the ``guard_<name>`` keys every row carries."""
        self.client = RewardClient(url, token=read_token(token_env) if token_env else None, timeout_s=timeout_s,
                                   retries=retries, deadline_s=deadline_s)
        self.fallback, self.on_failure, self.neutral = float(fallback_score), on_failure, float(neutral_score)
        self.trace = Path(trace) if trace else None
        self.calls = 0
        self._lock = threading.Lock()
        self.key, self.guards = key, tuple(guards)
        self.__name__ = _name(key)
        self._last: Optional[tuple[tuple, list[dict]]] = None     # the latest batch: (its captions and ids, rows)

    @classmethod
    def from_config(cls, cfg, url: str, trace: Optional[str | Path] = None) -> "CimReward":
        from cim.reward.guards import guard_keys
        from cim.train.trl.settings import reward_terms

        s = cfg.train.service
        return cls(url, token_env=s.token_env, timeout_s=s.timeout_s, retries=s.retries, deadline_s=s.deadline_s,
                   fallback_score=s.fallback_score, on_failure=cfg.reward.on_failure,
                   neutral_score=cfg.reward.neutral_score, trace=trace, key=reward_terms(cfg)[0][0],
                   guards=guard_keys(cfg.reward))

    @classmethod
    def functions(cls, cfg, url: str, trace: Optional[str | Path] = None) -> list:
        """TRL's ``reward_funcs``: this function, then a :class:`RewardTerm` per further term (same order and
        weights as :func:`cim.train.trl.settings.reward_terms`)."""
        from cim.train.trl.settings import reward_terms

        first = cls.from_config(cfg, url, trace)
        return [first, *(RewardTerm(first, key) for key, _ in reward_terms(cfg)[1:])]

    def __call__(self, prompts, completions, image_id, log_metric=None, trainer_state=None, **_) -> list[float]:
        captions = [_caption(c) for c in completions]
        rows = self._score(captions, image_id)
        scores = [row["score"] for row in rows]
        self.calls += 1
        if log_metric is not None:
            for key in METRIC_KEYS + (("upsilon",) + self.guards if self.guards else ()):
                log_metric(f"cim_reward/{key}/mean", sum(row[key] for row in rows) / len(rows))
            log_metric("cim_reward/samples", float(len(rows)))
        if self.trace is not None:
            self._write_trace(prompts, image_id, captions, scores, trainer_state)
        return [row[self.key] for row in rows]

    def rows_for(self, captions: list[str], image_id) -> list[dict]:
        """The rows of the batch this function scored last when it is this one (TRL calls its reward functions
        in order on one batch), else a new request."""
        last = self._last
        if last is not None and last[0] == (tuple(captions), tuple(str(i) for i in image_id)):
            return last[1]
        return self._score(captions, image_id)

    def _score(self, captions: list[str], image_id) -> list[dict]:
        try:
            results = self.client.score([{"caption": c, "image_id": str(i)} for c, i in zip(captions, image_id)])
        except Exception as exc:   # the reward system, not the captions
            if self.on_failure == "raise":
                raise
            results = [{"score": None, "error": f"reward system: {exc}", "error_kind": "system"} for _ in captions]
        bad = [r for r in results if r.get("error") is not None and r.get("error_kind") != "caption"]
        if bad and self.on_failure == "raise":
            raise RuntimeError(f"reward system failed for {len(bad)} of {len(results)} rollouts: {bad[0]['error']} "
                               "(reward.on_failure=neutral scores them reward.neutral_score instead)")
        rows = [self._row(c, r) for c, r in zip(captions, results)]
        self._last = ((tuple(captions), tuple(str(i) for i in image_id)), rows)
        return rows

    def _row(self, caption: str, r: dict) -> dict[str, float]:
        out = {"caption_len": float(len(caption.split())), "reward_system_failed": 0.0, "failed": 0.0}
        if r.get("error") is None:
            out.update(score=float(r["score"]), grc=float(r["grc"] or 0.0), qir=float(r["qir"] or 0.0),
                       source_retrieved=1.0 if r.get("source_rank") else 0.0)
            if self.guards:
                lacking = [k for k in self.guards if k[len(TERM_PREFIX):] not in (r.get("guards") or {})]
                if lacking:
                    raise RuntimeError(f"the reward service gives no {lacking[0]}: it scores without a guard "
                                       "reward.guards configures (start it with the same params)")
                out.update({k: term_value(r, k) for k in self.guards}, upsilon=float(r["upsilon"]))
        else:
            system = r.get("error_kind") != "caption"
            out.update(score=self.neutral if system else self.fallback, grc=0.0, qir=0.0, source_retrieved=0.0,
                       failed=1.0, reward_system_failed=1.0 if system else 0.0)
            out.update(dict.fromkeys(self.guards, 0.0), upsilon=out["score"])
        return out

    def _write_trace(self, prompts, image_ids, captions, scores, state) -> None:
        step = int(getattr(state, "global_step", 0) or 0)
        with self._lock, self.trace.open("a", encoding="utf-8") as handle:
            for prompt, image_id, caption, score in zip(prompts, image_ids, captions, scores):
                shown = _prompt_images(prompt)
                handle.write(json.dumps({"step": step, "call": self.calls, "image_id": str(image_id),
                                         "image_sha": [image_hash(im) for im in shown], "caption": caption,
                                         "score": score}) + "\n")


def _name(key: str) -> str:
    """A reward function's name (TRL's ``rewards/<name>``): ``cim`` for the reward itself (Υ), else its key."""
    return "cim" if key in ("score", "upsilon") else key


class RewardTerm:
    """One more term of the batch its :class:`CimReward` scored (TRL's ``rewards/<key>``): no request of its own."""

    def __init__(self, source: CimReward, key: str):
        self.source, self.key, self.__name__ = source, key, _name(key)

    def __call__(self, prompts, completions, image_id, **_) -> list[float]:
        rows = self.source.rows_for([_caption(c) for c in completions], image_id)
        return [row[self.key] for row in rows]
