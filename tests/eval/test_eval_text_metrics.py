"""BLEU-4 and METEOR through pycocoevalcap (skipped without Java)."""
import pytest

from cim.eval.text_metrics import bleu_meteor, java_available

pytestmark = pytest.mark.skipif(not java_available(), reason="pycocoevalcap needs Java")


def test_bleu4_by_hand_meteor_identity_and_empty_candidate():
    # "the cat sat on the mat" vs "the cat sat on a mat": clipped n-gram precisions 5/6, 3/5, 2/4, 1/3,
    # equal lengths (no brevity penalty) -> BLEU-4 = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    out = bleu_meteor({"1": ["The cat sat on a mat."]}, {"1": ["The cat sat on the mat."]}, meteor=False)
    assert out["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    same = bleu_meteor({"1": ["A black cat sits on a wooden table."], "2": ["Two dogs run on the grass."]},
                       {"1": "A black cat sits on a wooden table.", "2": ["Two dogs run on the grass."],
                        "3": ["unknown id"]})
    assert same["bleu4"] == pytest.approx(1.0, abs=1e-6) and same["meteor"] == pytest.approx(1.0, abs=1e-6)
    assert same["counts"] == {"samples": 2, "missing_candidate": 0, "unknown_id": 1, "empty_candidate": 0}
    # an empty candidate is scored (as nothing), not dropped
    out = bleu_meteor({"1": ["A man."], "2": ["A dog runs."]}, {"1": [""], "2": ["A dog runs."]})
    assert out["counts"]["empty_candidate"] == 1 and 0 < out["meteor"] < 1


def test_corpus_scores_of_any_subset_come_from_the_per_caption_statistics():
    """The bootstrap resamples BLEU-4 and METEOR from per-caption statistics: the sums over any subset of
    captions (repeats included) must give what pycocoevalcap's Bleu(4) and the METEOR jar give on it."""
    import random

    import numpy as np
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from cim.eval.text_metrics import bleu_from_stats, meteor_from_stats

    refs = {"1": ["A black cat sits on a wooden table."], "2": ["Two dogs run on the grass near a tree."],
            "3": ["A man."], "4": ["A red square on a blue background."], "5": ["A small green circle."]}
    hyps = {"1": "A black cat sits on a wooden table.", "2": "Two dogs run in the park.", "3": "A man.",
            "4": "A red square.", "5": "A big triangle and a circle."}
    out = bleu_meteor(refs, hyps)
    tok = PTBTokenizer()
    rng = random.Random(0)
    jar = Meteor()
    for _ in range(4):
        ids = [rng.choice(sorted(refs)) for _ in range(5)]                       # a bootstrap draw
        g = tok.tokenize({str(n): [{"caption": refs[k][0]}] for n, k in enumerate(ids)})
        r = tok.tokenize({str(n): [{"caption": hyps[k]}] for n, k in enumerate(ids)})
        bleu = Bleu(4).compute_score(g, r, verbose=0)[0][3]
        meteor = jar.compute_score(g, r)[0]
        bleu_sum = np.sum([out["per_sample"][k]["bleu_stats"] for k in ids], axis=0)
        meteor_sum = np.sum([out["per_sample"][k]["meteor_stats"] for k in ids], axis=0)
        assert bleu_from_stats(bleu_sum) == pytest.approx(bleu, abs=1e-12)
        assert meteor_from_stats(meteor_sum) == pytest.approx(meteor, abs=1e-12)
