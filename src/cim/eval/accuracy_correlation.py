"""The verification experiment (paper §3.1-3.2, Table 1, Fig. 2): do GRC, QIR and Υ track how much of the
image a caption keeps?

Captions -> a classifier reads each caption and names the coarse and the fine category (species / breed
on Oxford-IIIT Pet; on the demo world the main object's shape / its colour + texture + shape) -> captions
sorted by a metric and cut into bins of ``bin_size`` -> per bin the mean metric and logit(fine accuracy)
-> Pearson r over bins, for GRC, QIR and Υ; a scatter plot per metric.

Classifiers (each benchmark format chooses its own, :meth:`cim.eval.benchmarks.BenchmarkFormat.classifier`;
``classifier.correct(captions, samples) -> [(coarse correct, fine correct)]``):

- :func:`world_classifier` — **offline rule** on the demo world: coarse = the caption names the main
  object's shape (any synonym); fine = :func:`cim.data.world_scene.names_fine_label` (colour, texture and
  shape in one noun phrase).
- :func:`pet_rule_classifier` — **offline rule** on Oxford-IIIT Pet: the caption names the species
  (cat/kitten/feline, dog/puppy/canine; not the other one) / the breed's name.
- :class:`LMClassifier` — an LLM (Qwen3 via :class:`cim.eval.judges.ChatLMJudge`'s loader) picks the
  species and the breed from the caption alone, out of the dataset's label set: the paper's protocol.

logit(acc) uses the smoothed accuracy ``(k + 0.5) / (n + 1)`` so a bin with 0 or all correct stays finite.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

METRICS = ("grc", "qir", "score")
LABELS = {"grc": "GRC (Eq. 1)", "qir": "QIR (Eq. 2)", "score": "Υ = GRC + β·QIR (Eq. 3)"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", (text or "").lower())


# --------------------------------------------------------------------------------------------- classifiers
def world_classifier(caption: str, scene: dict) -> tuple[bool, bool]:
    """(coarse correct, fine correct) for a demo-world caption of ``scene`` (offline rule)."""
    from cim.data.world_scene import SHAPE_WORDS, names_fine_label

    main = scene["objects"][0]["shape"]
    coarse = bool(set(_words(caption)) & set(SHAPE_WORDS[main]))
    return coarse, bool(names_fine_label(caption, scene))


_SPECIES_WORDS = {"cat": {"cat", "cats", "kitten", "kittens", "kitty", "feline"},
                  "dog": {"dog", "dogs", "puppy", "puppies", "pup", "canine", "hound"}}


def pet_rule_classifier(caption: str, species: str, breed: str) -> tuple[bool, bool]:
    """(species correct, breed correct) by string rules (offline): the species is named and the other is
    not; the breed's words appear in order."""
    words = _words(caption)
    present = {s for s, ws in _SPECIES_WORDS.items() if ws & set(words)}
    coarse = present == {species}
    text = " " + " ".join(words) + " "
    fine = f" {' '.join(_words(breed))} " in text
    return coarse, fine


class RuleClassifier:
    """An offline rule ``rule(caption, sample) -> (coarse correct, fine correct)`` as a classifier."""

    def __init__(self, name: str, rule: Callable[[str, Any], tuple[bool, bool]]):
        self.name, self.rule = name, rule

    def correct(self, captions: Sequence[str], samples: Sequence[Any]) -> list[tuple[bool, bool]]:
        return [self.rule(c, s) for c, s in zip(captions, samples)]


class LMClassifier:
    """An LLM reads the caption and picks one coarse and one fine label from the given sets (the paper's
    Qwen3 protocol). Uses a :class:`~cim.eval.judges.ChatLMJudge` for loading and generation."""

    PROMPT = ("Here is a description of an image:\n\n{caption}\n\nBased only on this description, which of "
              "these is the main {what}? Options: {options}. If the description does not allow you to tell, "
              "answer \"unknown\". Reply with the option only.")

    def __init__(self, lm, coarse_labels: Sequence[str], fine_labels: Sequence[str],
                 coarse_what: str = "animal species", fine_what: str = "breed"):
        self.lm = lm
        self.coarse_labels, self.fine_labels = list(coarse_labels), list(fine_labels)
        self.coarse_what, self.fine_what = coarse_what, fine_what

    @property
    def name(self) -> str:
        return f"lm-classifier[{self.lm.name}]"

    @staticmethod
    def pick(reply: str, labels: Sequence[str]) -> Optional[str]:
        text = " " + " ".join(_words(re.sub(r"<think>.*?</think>", " ", reply or "", flags=re.S))) + " "
        hits = [lab for lab in labels if f" {' '.join(_words(lab))} " in text]
        return max(hits, key=len) if hits else None       # the most specific label named

    def classify(self, captions: Sequence[str]) -> list[tuple[Optional[str], Optional[str]]]:
        lm = self.lm
        out = []
        for what, labels in ((self.coarse_what, self.coarse_labels), (self.fine_what, self.fine_labels)):
            prompts = [self.PROMPT.format(caption=c, what=what, options=", ".join(labels)) for c in captions]
            replies = lm.complete(prompts)
            out.append([self.pick(r, labels) for r in replies])
        return list(zip(out[0], out[1]))

    def correct(self, captions: Sequence[str], samples: Sequence[Any]) -> list[tuple[bool, bool]]:
        """The picks against each sample's ``labels["coarse"]`` / ``labels["fine"]``."""
        return [(coarse == s.labels["coarse"], fine == s.labels["fine"])
                for (coarse, fine), s in zip(self.classify(captions), samples)]


# ---------------------------------------------------------------------------------------------- binning
def smoothed_logit(correct: int, n: int) -> float:
    p = (correct + 0.5) / (n + 1.0)
    return math.log(p / (1 - p))


@dataclass
class BinnedCorrelation:
    metric: str
    pearson_r: float
    p_value: float
    n_bins: int
    bin_size: int
    bin_means: list[float]
    bin_accuracy: list[float]
    bin_logit: list[float]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def binned_correlation(values: Sequence[float], correct: Sequence[bool], bin_size: int = 100,
                       metric: str = "score") -> BinnedCorrelation:
    """Sort by ``values``, cut into consecutive bins of ``bin_size`` (a last partial bin is dropped), and
    correlate each bin's mean value with the logit of its accuracy (Pearson)."""
    from scipy.stats import pearsonr

    v = np.asarray(values, dtype=float)
    c = np.asarray(correct, dtype=bool)
    keep = np.isfinite(v)
    v, c = v[keep], c[keep]
    order = np.argsort(v, kind="stable")
    n_bins = len(v) // bin_size
    means, acc, logits = [], [], []
    for b in range(n_bins):
        idx = order[b * bin_size:(b + 1) * bin_size]
        means.append(float(v[idx].mean()))
        acc.append(float(c[idx].mean()))
        logits.append(smoothed_logit(int(c[idx].sum()), len(idx)))
    r = p = float("nan")
    if n_bins >= 3 and np.std(means) > 0 and np.std(logits) > 0:
        res = pearsonr(means, logits)
        r, p = float(res.statistic), float(res.pvalue)
    return BinnedCorrelation(metric, r, p, n_bins, bin_size, means, acc, logits)


def verification(rows: Sequence[dict], bin_size: int = 100) -> dict:
    """``rows``: ``{grc, qir, score, coarse_correct, fine_correct}`` per caption (rows with a failed score
    are counted and left out). Returns accuracies, one :class:`BinnedCorrelation` per metric and counts."""
    ok = [r for r in rows if all(r.get(m) is not None for m in METRICS)]
    out = {"n_captions": len(rows), "n_scored": len(ok), "n_failed": len(rows) - len(ok), "bin_size": bin_size,
           "coarse_accuracy": float(np.mean([r["coarse_correct"] for r in ok])) if ok else float("nan"),
           "fine_accuracy": float(np.mean([r["fine_correct"] for r in ok])) if ok else float("nan")}
    for m in METRICS:
        out[m] = binned_correlation([r[m] for r in ok], [r["fine_correct"] for r in ok], bin_size, m).to_dict()
    return out


def plot_verification(result: dict, path, title: str = "") -> None:
    """Fig. 2 style: bin mean of each metric vs logit(fine accuracy), Pearson r in each panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6))
    for ax, m in zip(axes, METRICS):
        d = result[m]
        ax.scatter(d["bin_means"], d["bin_logit"], s=18)
        if d["n_bins"] >= 2 and np.isfinite(d["pearson_r"]):
            k, c0 = np.polyfit(d["bin_means"], d["bin_logit"], 1)
            xs = np.linspace(min(d["bin_means"]), max(d["bin_means"]), 20)
            ax.plot(xs, k * xs + c0, lw=1)
        ax.set_title(f"{LABELS[m]}\nPearson r = {d['pearson_r']:.3f} ({d['n_bins']} bins)", fontsize=9)
        ax.set_xlabel(f"bin mean ({d['bin_size']} captions per bin)")
        ax.set_ylabel("logit(fine accuracy)")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
