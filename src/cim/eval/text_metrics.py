"""BLEU-4 and METEOR as papers print them: pycocoevalcap's PTB tokenizer, ``Bleu(4)`` (the 4th value,
corpus level) and ``Meteor()`` (the jar's corpus score). Both need Java on PATH.

Ids present on one side only are counted, not scored; an empty candidate is scored (as an empty string).
"""
from __future__ import annotations

import shutil
from typing import Mapping, Sequence

from cim.eval.capture import align_inputs


class JavaNotFound(RuntimeError):
    pass


def java_available() -> bool:
    return shutil.which("java") is not None


def bleu_meteor(gts: Mapping[str, Sequence[str] | str], res: Mapping[str, Sequence[str] | str],
                meteor: bool = True) -> dict:
    """``{"bleu4": .., "meteor": .., "counts": {...}, "protocol": {...}}`` (0..1; papers print x100)."""
    if not java_available():
        raise JavaNotFound("BLEU/METEOR need Java for pycocoevalcap's tokenizer and METEOR jar: "
                           "`apt-get install default-jre-headless`")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts, res, ids, counts = align_inputs(gts, res)
    out = {"bleu4": float("nan"), "meteor": float("nan"), "counts": counts,
           "protocol": {"metric": "BLEU-4 / METEOR", "implementation": "pycocoevalcap (PTBTokenizer, Bleu(4), "
                        "Meteor 1.5 -l en -norm)", "level": "corpus"}}
    if not ids:
        return out
    tok = PTBTokenizer()
    g = tok.tokenize({k: [{"caption": c} for c in gts[k]] for k in ids})
    r = tok.tokenize({k: [{"caption": res[k]}] for k in ids})
    bleu, _ = Bleu(4).compute_score(g, r, verbose=0)
    out["bleu4"] = float(bleu[3])
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["meteor"] = float(scorer.compute_score(g, r)[0])
        finally:
            del scorer
    return out
