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
