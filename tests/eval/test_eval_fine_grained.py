"""SC-Captioner's object and object-aware attribute metrics on hand-built cases with known cosines."""
import numpy as np
import pytest

from cim.eval.capture import Capture, PhraseEmbeddings
from cim.eval.fine_grained import fine_grained_scores, object_aware_attribute_credit
from cim.eval.parsers import SpacyParser


class TableEncoder:
    """Hand-written vectors; any phrase not in the table gets its own axis (cosine 0 to everything else)."""

    name = "table"

    def __init__(self, table, dim=64):
        self.table = {k: np.asarray(v + [0] * (dim - len(v)), dtype=np.float32) for k, v in table.items()}
        self.dim, self.next_axis = dim, 8

    def encode(self, texts):
        out = []
        for t in texts:
            if t not in self.table:
                v = np.zeros(self.dim, np.float32)
                v[self.next_axis] = 1
                self.next_axis += 1
                self.table[t] = v
            out.append(self.table[t] / np.linalg.norm(self.table[t]))
        return np.stack(out)


# cos(puppy, dog) = 0.8, cos(big, brown) = 0.5; everything else orthogonal unless identical
TABLE = {"cat": [1, 0, 0, 0, 0], "dog": [0, 1, 0, 0, 0], "puppy": [0, 0.8, 0.6, 0, 0],
         "black": [0, 0, 0, 1, 0], "big": [0, 0, 0, 0, 1, 0], "brown": [0, 0, 0, 0, 0.5, 0.8660254]}


def test_object_aware_attribute_credit_by_hand():
    emb = PhraseEmbeddings(TableEncoder(TABLE))
    scored = {"cat": ["black"], "puppy": ["big"]}
    against = {"cat": ["black", "small"], "dog": ["brown"]}
    # cat -> cat (s=1), black -> 1; puppy -> dog (s=0.8), big -> brown 0.5
    assert object_aware_attribute_credit(scored, against, emb) == pytest.approx((1 * 1 + 0.8 * 0.5) / (1 + 0.8), abs=1e-5)
    assert object_aware_attribute_credit({}, against, emb) == 0.0


@pytest.fixture(scope="module")
def cap():
    return Capture(SpacyParser(), TableEncoder(TABLE))


def test_fine_grained_by_hand(cap):
    res = fine_grained_scores(
        cap, {"1": ["A black cat."], "2": ["A cat."]}, {"1": ["A black cat and a big puppy."], "2": ["A black cat."]},
        gpt_objects={"1": ["dog", "sofa"], "2": ["cat"]},
        gpt_attributes={"1": {"cat": ["black", "small"], "dog": ["brown"]}, "2": {"cat": ["black"]}})
    s = res.per_sample["1"]
    # objects: recall vs reference {cat}: cat exact -> R = 1. Precision vs {cat, dog, sofa}: cat exact,
    # puppy leftover -> best cosine 0.8 (dog) -> P = 1.8 / 2
    assert (s["object_precision"], s["object_recall"]) == (pytest.approx(0.9, abs=1e-5), pytest.approx(1.0, abs=1e-5))
    assert s["object_f1"] == pytest.approx(2 * 0.9 / 1.9, abs=1e-5)
    # attributes: recall: cat -> cat, black -> black = 1; precision against the GPT lists = (1 + 0.8 * 0.5) / 1.8
    assert s["attribute_recall"] == pytest.approx(1.0, abs=1e-5)
    assert s["attribute_precision"] == pytest.approx(1.4 / 1.8, abs=1e-5)
    # sample 2: the reference has no attributes -> skipped and counted, not scored as zero
    assert "2" not in res.per_sample and res.counts["skipped_no_attributes"] == 1 and res.counts["scored"] == 1
    assert res.components["object_precision"] == pytest.approx(0.9, abs=1e-5)
    assert res.protocol["text_encoder"] == "table" and "skip_rule" in res.protocol


def test_fine_grained_needs_an_encoder():
    with pytest.raises(ValueError, match="text encoder"):
        fine_grained_scores(Capture(SpacyParser(), None), {}, {}, {}, {})


def test_soft_stage_with_real_minilm(tiny_encoders):
    """The offline default SBERT (MiniLM, the project's text encoder) plugs in as-is; the soft credit is
    exactly its cosine."""
    enc = tiny_encoders[0]
    v = enc.encode(["puppy", "dog"])
    cos = float(v[0] @ v[1])
    cap = Capture(SpacyParser(), enc)
    s = cap.score_pair("A puppy.", "A dog.")
    assert 0.3 < cos < 1.0
    assert s.matches["object"].cand_soft == pytest.approx(cos, abs=1e-4)
    assert s.object[0] == pytest.approx(cos, abs=1e-4)
    assert cap.protocol()["text_encoder"] == "all-MiniLM-L6-v2"
