"""Guard terms: named functions of a caption added to the paper's reward Υ where it is blind (docs/reward.md).

The audit finds Υ at chance on a caption written twice, on keyword stuffing, on a bare keyword list, on a
shuffled caption and on added praise: nothing in GRC or QIR pushes a policy away from such text, and GRPO
drifts into repetition. A guard scores one caption with a value in [-1, 0] (0: nothing wrong) and carries a
weight; the composed reward is

    score = Υ + Σ_g weight_g · guard_g(caption)                      (reward.aggregate = sum)

and with ``reward.aggregate = gdpo`` each term (GRC, QIR with weight β, each guard) is normalised within its
group before the weighted sum (:func:`reward_terms`; verl's ``compute_gdpo_outcome_advantage``). Without
guards (the default, and the ``paper`` and ``official`` protocols) ``score`` is Υ, as before.

Configured by ``reward.guards`` (names, in order; ``reward.guards=[repetition,length]`` on the command line)
and ``reward.guard.<name>`` (its ``weight`` and settings; unset keys take the guard's ``defaults``). A guard
is registered on :data:`cim.plugins.GUARDS`: a class built as ``cls(settings, corpus)`` whose instances are
called on one caption; ``corpus`` (:class:`CorpusTexts`) gives the corpus captions the index was built from,
for guards whose limits come from the corpus rather than a constant. Plugins register theirs the same way.

Built in:

- ``repetition``: minus the share of the caption's word n-grams (``n``, 3) that repeat an earlier one;
- ``length``: 0 up to a length limit, the ``quantile`` (0.95) of the corpus captions' word counts, then minus
  the excess as a share of the limit (−1 at twice the limit and beyond);
- ``fluency``: minus the share of the caption's word n-grams (``n``, 3; within a sentence, start and end
  marked) that no corpus caption contains: keyword lists, stuffed keywords and shuffled words chain words
  as written sentences do not.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from cim.errors import ConfigError
from cim.plugins import GUARDS
from cim.reward.text import ngrams, repeated_ngram_rate, sentences, words

__all__ = ["CorpusTexts", "Guard", "GuardError", "build_guards", "guard_settings", "check_guards", "reward_terms",
           "guard_keys", "term_value", "compose", "evaluate", "TERM_PREFIX"]

TERM_PREFIX = "guard_"          # a guard's key beside score/grc/qir where results are flat (verl, MLflow)


class CorpusTexts:
    """The corpus captions of an index (its manifest's ``text``), read once on first use. ``sample`` > 0
    keeps every k-th caption so at most ``sample`` are read into memory (a million-row gallery)."""

    def __init__(self, manifest: Optional[str | Path], texts: Optional[Sequence[str]] = None):
        self.manifest = Path(manifest) if manifest else None
        self._texts = list(texts) if texts is not None else None

    @classmethod
    def of_index(cls, index) -> "CorpusTexts":
        """The manifest recorded in the index's metadata (relative to the index folder)."""
        rel = ((getattr(index, "meta", None) or {}).get("manifest") or {}).get("path")
        root = Path(getattr(index, "path", None) or ".")
        return cls(root / rel if rel else None)

    def texts(self, sample: int = 0) -> list[str]:
        if self._texts is None:
            if self.manifest is None or not self.manifest.is_file():
                raise ConfigError(f"a reward guard needs the corpus captions, but the index's manifest "
                                  f"{self.manifest or '(none recorded)'} is not there; keep the corpus manifest "
                                  "beside the index or drop the guard from reward.guards")
            from cim.io import read_jsonl

            self._texts = [str(row.get("text") or "") for _, row in read_jsonl(self.manifest)]
        if sample and len(self._texts) > sample:
            step = math.ceil(len(self._texts) / sample)
            return self._texts[::step]
        return self._texts


class Guard:
    """A guard's base: ``defaults`` (its settings, ``weight`` among them), ``settings`` as configured,
    ``__call__(caption) -> value in [-1, 0]`` and :meth:`describe` (what it scores with, derived limits too)."""

    defaults: dict[str, Any] = {"weight": 1.0}
    name = ""                   # the registered name (set by build_guards)

    def __init__(self, settings: dict, corpus: CorpusTexts):
        self.settings = settings
        self.weight = float(settings["weight"])

    def __call__(self, caption: str) -> float:
        raise NotImplementedError

    def describe(self) -> dict:
        return dict(self.settings)


@GUARDS.register("repetition")
class Repetition(Guard):
    """Minus the share of repeated word n-grams inside the caption (:func:`cim.reward.text.repeated_ngram_rate`)."""

    defaults = {"weight": 1.0, "n": 3}

    def __init__(self, settings: dict, corpus: CorpusTexts):
        super().__init__(settings, corpus)
        self.n = int(settings["n"])
        if self.n < 1:
            raise ConfigError(f"reward.guard.repetition.n must be >= 1, got {self.n}")

    def __call__(self, caption: str) -> float:
        return -repeated_ngram_rate(caption, self.n)


@GUARDS.register("length")
class Length(Guard):
    """0 up to the corpus's ``quantile`` caption length (words), then minus the excess over that limit as a
    share of it, down to -1."""

    defaults = {"weight": 1.0, "quantile": 0.95, "corpus_sample": 100_000}

    def __init__(self, settings: dict, corpus: CorpusTexts):
        super().__init__(settings, corpus)
        q = float(settings["quantile"])
        if not 0.0 < q <= 1.0:
            raise ConfigError(f"reward.guard.length.quantile must be in (0, 1], got {q}")
        lengths = [len(words(t)) for t in corpus.texts(int(settings["corpus_sample"]))]
        lengths = [n for n in lengths if n]
        if not lengths:
            raise ConfigError("reward.guard.length: the corpus has no caption to take a length limit from")
        self.limit = max(1, int(math.ceil(float(np.quantile(lengths, q)))))

    def __call__(self, caption: str) -> float:
        over = len(words(caption)) - self.limit
        return -min(1.0, over / self.limit) if over > 0 else 0.0

    def describe(self) -> dict:
        return {**self.settings, "limit_words": self.limit}


@GUARDS.register("fluency")
class Fluency(Guard):
    """Minus the share of the caption's word n-grams (``n``, 3; within a sentence, its start and end marked)
    that fewer than ``min_captions`` (2) corpus captions hold: the corpus is the language model, its n-grams what written sentences
    look like. A keyword list starts, joins and ends where no sentence does; stuffed keywords and shuffled
    words chain words no caption chains."""

    defaults = {"weight": 1.0, "n": 3, "min_captions": 2, "corpus_sample": 100_000}

    def __init__(self, settings: dict, corpus: CorpusTexts):
        super().__init__(settings, corpus)
        self.n, least = int(settings["n"]), int(settings["min_captions"])
        if self.n < 2:
            raise ConfigError(f"reward.guard.fluency.n must be >= 2, got {self.n}")
        if least < 1:
            raise ConfigError(f"reward.guard.fluency.min_captions must be >= 1, got {least}")
        # an n-gram is known when at least `min_captions` corpus captions hold it: with 2, a corpus caption
        # scored against its own corpus (the audit) is judged by the *other* captions, leave-one-out
        counts = Counter(g for t in corpus.texts(int(settings["corpus_sample"])) for g in set(self._grams(t)))
        self.known = {g for g, c in counts.items() if c >= least}
        if not self.known:
            raise ConfigError("reward.guard.fluency: the corpus captions have no word sequence to compare with")

    def _grams(self, text: str) -> list[tuple[str, ...]]:
        return [g for s in sentences(text) for g in ngrams(["<s>"] + s + ["</s>"], self.n)]

    def __call__(self, caption: str) -> float:
        grams = self._grams(caption)
        if not grams:
            return 0.0
        return -sum(g not in self.known for g in grams) / len(grams)

    def describe(self) -> dict:
        return {**self.settings, "corpus_ngrams": len(self.known)}


def guard_settings(reward_cfg, name: str) -> dict:
    """The guard's settings: its ``defaults`` under ``reward.guard.<name>`` (unknown keys refused)."""
    from omegaconf import OmegaConf

    cls = GUARDS.get(name)
    given = (reward_cfg.get("guard") if hasattr(reward_cfg, "get") else getattr(reward_cfg, "guard", {})) or {}
    mine = given.get(name) or {}
    mine = OmegaConf.to_container(mine, resolve=True) if OmegaConf.is_config(mine) else dict(mine)
    unknown = sorted(set(mine) - set(cls.defaults))
    if unknown:
        raise ConfigError(f"reward.guard.{name}: unknown setting {', '.join(unknown)} "
                          f"(it has {', '.join(sorted(cls.defaults))})")
    out = {**cls.defaults, **mine}
    w = out.get("weight")
    try:
        w = float(w)
    except (TypeError, ValueError):
        raise ConfigError(f"reward.guard.{name}.weight must be a number, got {w!r}") from None
    if not math.isfinite(w) or w < 0:
        raise ConfigError(f"reward.guard.{name}.weight must be a finite number >= 0, got {w}")
    out["weight"] = w
    return out


def check_guards(reward_cfg) -> None:
    """Every configured guard is registered and its settings are sound (no model, no corpus read):
    :class:`~cim.registry.UnknownName` lists the registered guards; a bad weight is one line."""
    names = list(reward_cfg.guards or [])
    if len(set(names)) != len(names):
        raise ConfigError(f"reward.guards names a guard twice: {', '.join(names)}")
    for name in names:
        guard_settings(reward_cfg, name)


def build_guards(reward_cfg, corpus: CorpusTexts) -> list[Guard]:
    """The configured guards, in ``reward.guards`` order."""
    check_guards(reward_cfg)
    out = []
    for name in reward_cfg.guards or []:
        guard = GUARDS.get(name)(guard_settings(reward_cfg, name), corpus)
        guard.name = name
        out.append(guard)
    return out


def reward_terms(reward_cfg) -> list[tuple[str, float]]:
    """``[(key, weight)]`` of the reward's terms, as GDPO normalises them one by one: ``grc`` (weight 1) and
    ``qir`` (weight β) as ``reward.mode`` uses them, then ``guard_<name>`` with each guard's weight. The keys
    are those of a flat result (verl's reward dict, the local trainer's per-rollout arrays)."""
    mode, beta = str(reward_cfg.mode), float(reward_cfg.beta)
    terms = {"both": [("grc", 1.0), ("qir", beta)], "grc": [("grc", 1.0)], "qir": [("qir", 1.0)]}[mode]
    return terms + [(TERM_PREFIX + name, guard_settings(reward_cfg, name)["weight"])
                    for name in (reward_cfg.guards or [])]


def guard_keys(reward_cfg) -> list[str]:
    """``guard_<name>`` of every configured guard, in ``reward.guards`` order (a flat result's guard keys)."""
    return [TERM_PREFIX + name for name in (reward_cfg.guards or [])]


def term_value(result: dict, key: str) -> float:
    """A scorer result's value under a flat key (``grc``, ``qir``, ``upsilon``, ``guard_<name>``); 0.0 for a
    result with an error (every term of a failed item, as verl's reward function gives it). A guard the result
    does not carry raises :class:`KeyError` (its scorer was configured without it)."""
    if result.get("error") is not None:
        return 0.0
    if key.startswith(TERM_PREFIX):
        return float(result["guards"][key[len(TERM_PREFIX):]])
    return float(result[key] or 0.0)


def compose(upsilon: float, values: dict[str, float], guards: Sequence[Guard]) -> float:
    """Υ plus each guard's weighted value: the ``score`` of a result."""
    return float(upsilon + sum(g.weight * values[g.name] for g in guards))


def evaluate(guards: Sequence[Guard], caption: str) -> dict[str, float]:
    """``{name: value}`` of every guard on one caption; a guard that raises raises :class:`GuardError`."""
    out = {}
    for g in guards:
        try:
            value = float(g(caption))
        except Exception as exc:  # noqa: BLE001 - one caption fails, never the batch (the scorer's item path)
            raise GuardError(f"guard {g.name!r} failed on this caption: {type(exc).__name__}: {exc}") from None
        if not math.isfinite(value):
            raise GuardError(f"guard {g.name!r} returned {value} for this caption")
        out[g.name] = value
    return out


class GuardError(ValueError):
    """A guard could not score one caption (that item gets ``error_kind = "item"``)."""

