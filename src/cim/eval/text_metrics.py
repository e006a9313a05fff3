"""BLEU-4 and METEOR as papers print them: pycocoevalcap's PTB tokenizer, ``Bleu(4)`` (the 4th value,
corpus level) and ``Meteor()`` (the jar's corpus score). Both need Java on PATH.

Both are corpus-level: sums of per-caption statistics, then one formula. Each caption's statistics are kept
(``bleu_stats``: test length, closest reference length, n-gram guesses and matches for n = 1..4;
``meteor_stats``: the jar's 23 numbers, a segment matched whole in one chunk counting no chunk, as the jar's
aggregate counts it) and :func:`bleu_from_stats` / :func:`meteor_from_stats` compute the
corpus score of any weighted subset of captions exactly as the tools do (tests check it against both), so a
bootstrap over images resamples the real metric, not an average of sentence scores.

Ids present on one side only are counted, not scored; an empty candidate is scored (as an empty string).
"""
from __future__ import annotations

import math
import shutil
from typing import Mapping, Sequence

import numpy as np

from cim.eval.capture import align_inputs

__all__ = ["bleu_meteor", "bleu_from_stats", "meteor_from_stats", "JavaNotFound", "java_available"]

# METEOR 1.5, `-l en -norm` (pycocoevalcap's call): the English task's parameters and module weights
# (exact, stem, synonym, paraphrase)
METEOR_EN = {"alpha": 0.85, "beta": 0.2, "gamma": 0.6, "delta": 0.75, "weights": (1.0, 0.6, 0.8, 0.6)}


class JavaNotFound(RuntimeError):
    pass


def java_available() -> bool:
    return shutil.which("java") is not None


def bleu_from_stats(stats: np.ndarray, n: int = 4) -> float:
    """Corpus BLEU-``n`` from summed per-caption statistics ``[testlen, reflen, guess_1..4, correct_1..4]``,
    as pycocoevalcap's ``BleuScorer.compute_score`` (same ``tiny``/``small`` guards and brevity penalty)."""
    small, tiny = 1e-9, 1e-15
    testlen, reflen = float(stats[0]), float(stats[1])
    guess, correct = stats[2:6], stats[6:10]
    bleu = 1.0
    for k in range(n):
        bleu *= (float(correct[k]) + tiny) / (float(guess[k]) + small)
    score = bleu ** (1.0 / n)
    ratio = (testlen + tiny) / (reflen + small)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score


def meteor_from_stats(stats: np.ndarray, p: dict = METEOR_EN) -> float:
    """METEOR 1.5 from summed per-caption statistics (the jar's ``SCORE`` line: test/reference length and
    function words, content/function matches of each module, chunks, matched words), as its ``EVAL``."""
    alpha, beta, gamma, delta, w = p["alpha"], p["beta"], p["gamma"], p["delta"], p["weights"]
    test_len, ref_len, test_fn, ref_fn = (float(x) for x in stats[:4])
    stages = np.asarray(stats[4:20], dtype=float).reshape(4, 4)     # test content, ref content, test fn, ref fn
    chunks, test_words, ref_words = (float(x) for x in stats[20:23])
    test_matches = sum(w[i] * (delta * stages[i, 0] + (1 - delta) * stages[i, 2]) for i in range(4))
    ref_matches = sum(w[i] * (delta * stages[i, 1] + (1 - delta) * stages[i, 3]) for i in range(4))
    test_weighted = delta * (test_len - test_fn) + (1 - delta) * test_fn
    ref_weighted = delta * (ref_len - ref_fn) + (1 - delta) * ref_fn
    precision = test_matches / test_weighted if test_weighted else 0.0
    recall = ref_matches / ref_weighted if ref_weighted else 0.0
    if precision == 0 or recall == 0:
        return 0.0
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    matched = (test_words + ref_words) / 2
    if test_words == test_len and ref_words == ref_len and chunks == 1:
        frag = 0.0
    else:
        frag = chunks / matched if matched else 0.0
    return fmean * (1 - gamma * frag ** beta)


def bleu_meteor(gts: Mapping[str, Sequence[str] | str], res: Mapping[str, Sequence[str] | str],
                meteor: bool = True) -> dict:
    """``{"bleu4", "meteor", "counts", "protocol", "per_sample": {id: {"bleu_stats", "meteor_stats"}}}``
    (scores 0..1; papers print x100)."""
    if not java_available():
        raise JavaNotFound("BLEU/METEOR need Java for pycocoevalcap's tokenizer and METEOR jar: "
                           "`apt-get install default-jre-headless`")
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts, res, ids, counts = align_inputs(gts, res)
    out = {"bleu4": float("nan"), "meteor": float("nan"), "counts": counts, "per_sample": {},
           "protocol": {"metric": "BLEU-4 / METEOR", "implementation": "pycocoevalcap (PTBTokenizer, Bleu(4), "
                        "Meteor 1.5 -l en -norm)", "level": "corpus"}}
    if not ids:
        return out
    from cim.quiet import captured_stderr

    tok = PTBTokenizer()
    with captured_stderr():         # the Java tokenizer's "PTBTokenizer tokenized ... tokens per second"
        g = tok.tokenize({k: [{"caption": c} for c in gts[k]] for k in ids})
        r = tok.tokenize({k: [{"caption": res[k]}] for k in ids})
    scorer = BleuScorer(n=4)
    for k in ids:                                   # what pycocoevalcap's Bleu(4).compute_score feeds it
        scorer += (r[k][0], g[k])
    bleu = np.zeros((len(ids), 10))
    for row, comps in zip(bleu, scorer.ctest):
        row[0] = comps["testlen"]
        row[1] = scorer._single_reflen(comps["reflen"], "closest", comps["testlen"])
        row[2:6], row[6:10] = comps["guess"], comps["correct"]
    out["bleu4"] = bleu_from_stats(bleu.sum(axis=0))
    per = {k: {"bleu_stats": row.tolist()} for k, row in zip(ids, bleu)}
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        jar = Meteor()
        try:
            stats = np.array([[float(x) for x in jar._stat(r[k][0], g[k]).split()] for k in ids])
        finally:
            del jar
        # the jar's aggregate counts no chunk for a segment matched whole in one chunk (its fragmentation is 0):
        # so kept, the sums give the jar's corpus score exactly (tests/test_eval_text_metrics.py)
        perfect = (stats[:, 21] == stats[:, 0]) & (stats[:, 22] == stats[:, 1]) & (stats[:, 20] == 1)
        stats[perfect, 20] = 0
        out["meteor"] = meteor_from_stats(stats.sum(axis=0))
        for k, row in zip(ids, stats):
            per[k]["meteor_stats"] = row.tolist()
    out["per_sample"] = per
    return out
