"""SC-Captioner's fine-grained Objects and Attributes metrics (the paper's Table 2 columns), as specified in
docs/evaluation.md.

Same parser and filtering as CAPTURE (:class:`cim.eval.capture.Capture` supplies both, and its text encoder).
Per sample, against the first reference caption:

- A sample is **skipped** (and counted) when the reference's or the candidate's attribute dict is empty.
- **Objects**: recall = reference credit of CAPTURE's three-stage match of the candidate objects against the
  reference objects / #reference objects; precision = candidate credit of the same match against the union of
  the reference objects and the published GPT object list for the image / #candidate objects (the GPT list
  only widens the precision reference; its names are used as published, not lemmatised). F1 per sample.
- **Attributes** (object-aware, SBERT only): recall: each reference object i takes the most similar candidate
  object j* (cosine s_i); each attribute of i takes its best cosine among j*'s attributes (a_ik);
  ``R = sum_i s_i sum_k a_ik / sum_i s_i n_i``. Precision: the same with the candidate as the side being
  scored and the published GPT attribute lists as the reference (each candidate object to its most similar
  GPT object). GPT objects with an empty attribute list are left out (the reference code would fail on them).
- Macro-average of P, R and F1 (each averaged on its own) over the samples that were not skipped; eps = 1e-6.

Deterministic for the same reasons as CAPTURE (sorted matching order, one embedding per distinct phrase);
ties in "most similar object" go to the first in sorted order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Mapping, Sequence

from cim.eval.capture import EPS, Capture, Elements, align_inputs, hard_match, soft_match


def _f1(p: float, r: float, eps: float = EPS) -> float:
    return 2 * p * r / (p + r + eps)


def object_prf(cap: Capture, cand: Elements, ref: Elements, gpt_objects: Sequence[str]) -> tuple[float, float, float]:
    same = cap.same_phrase if cap.synonym_matching else None
    recall_match = soft_match(hard_match(cand.objects, ref.objects, same), cap.embeddings)
    widened = sorted(set(ref.objects) | set(gpt_objects))
    precision_match = soft_match(hard_match(cand.objects, widened, same), cap.embeddings)
    p = precision_match.cand_credit / (len(cand.objects) + cap.eps)
    r = recall_match.ref_credit / (len(ref.objects) + cap.eps)
    return p, r, _f1(p, r, cap.eps)


def object_aware_attribute_credit(scored: Mapping[str, Sequence[str]], against: Mapping[str, Sequence[str]],
                                  emb, eps: float = EPS) -> float:
    """``sum_i s_i sum_k a_ik / sum_i s_i n_i`` where i runs over ``scored``'s objects, s_i is the cosine to the
    most similar object of ``against``, and a_ik the best cosine of attribute k among that object's attributes."""
    scored_objs = sorted(k for k, v in scored.items() if v)
    against_objs = sorted(k for k, v in against.items() if v)
    if not scored_objs or not against_objs:
        return 0.0
    obj_sim = emb.similarity(scored_objs, against_objs)          # (scored, against)
    best = obj_sim.argmax(axis=1)                                 # first maximum: sorted order breaks ties
    num = den = 0.0
    for i, obj in enumerate(scored_objs):
        s_i = float(obj_sim[i, best[i]])
        attrs = sorted(scored[obj])
        partner = sorted(against[against_objs[best[i]]])
        a = emb.similarity(attrs, partner).max(axis=1)            # each attribute's best cosine
        num += s_i * float(a.sum())
        den += s_i * len(attrs)
    return num / (den + eps)


@dataclass
class FineGrainedResult:
    components: dict[str, float]       # object_precision ... attribute_f1 (macro means, 0..1)
    per_sample: dict[str, dict]
    counts: dict[str, int]
    protocol: dict

    def to_dict(self) -> dict:
        return {**self.components, "counts": self.counts, "protocol": self.protocol}


KEYS = tuple(f"{c}_{s}" for c in ("object", "attribute") for s in ("precision", "recall", "f1"))


def fine_grained_scores(cap: Capture, gts: Mapping[str, Sequence[str] | str], res: Mapping[str, Sequence[str] | str],
                        gpt_objects: Mapping[str, Sequence[str]], gpt_attributes: Mapping[str, Mapping[str, Sequence[str]]]
                        ) -> FineGrainedResult:
    """SC-Captioner's Objects and Attributes P/R/F1. Needs ``cap`` to have a text encoder (attributes are
    matched by SBERT cosine only)."""
    if cap.embeddings is None:
        raise ValueError("fine-grained attribute metrics need a text encoder (SBERT cosine)")
    gts, res, ids, counts = align_inputs(gts, res)
    counts.update(skipped_no_attributes=0, missing_gpt_lists=0, scored=0)
    texts = [res[k] for k in ids] + [gts[k][0] for k in ids]
    elements = dict(zip(texts, cap.elements(texts)))
    per_sample: dict[str, dict] = {}
    for k in ids:
        cand, ref = elements[res[k]], elements[gts[k][0]]
        if not ref.attributes or not cand.attributes:
            counts["skipped_no_attributes"] += 1
            continue
        if k not in gpt_objects or k not in gpt_attributes:
            counts["missing_gpt_lists"] += 1
            continue
        op, orr, of = object_prf(cap, cand, ref, gpt_objects[k])
        gpt_attrs = {o: list(v) for o, v in gpt_attributes[k].items()}
        ar = object_aware_attribute_credit(ref.attributes, cand.attributes, cap.embeddings, cap.eps)
        ap = object_aware_attribute_credit(cand.attributes, gpt_attrs, cap.embeddings, cap.eps)
        per_sample[k] = dict(zip(KEYS, (op, orr, of, ap, ar, _f1(ap, ar, cap.eps))))
    counts["scored"] = len(per_sample)
    comps = {key: (fmean(r[key] for r in per_sample.values()) if per_sample else math.nan) for key in KEYS}
    protocol = {**cap.protocol(), "metric": "SC-Captioner fine-grained objects/attributes",
                "reference": "first reference caption; GPT object list widens object precision; GPT attribute "
                             "lists are the attribute-precision reference",
                "skip_rule": "sample skipped when the reference's or candidate's attribute dict is empty",
                "averaging": "macro over scored samples (P, R, F1 each averaged)"}
    return FineGrainedResult(comps, per_sample, counts, protocol)
