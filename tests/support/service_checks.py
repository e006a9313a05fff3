"""Checks shared by the reward service's tests and the verl tests (tests/service, tests/train)."""
import pytest

from support.train_world import scorer

from cim.reward.schema import RESULT_KEYS
from cim.reward.scorer import Scorer


class Tripwire:
    """The real text encoder, except that it raises TypeError (as the tokenizer does) on a caption holding
    TRIPWIRE: a fault the scorer's per-item validation does not foresee."""

    def __init__(self, inner):
        self.inner = inner

    def encode(self, texts):
        if any("TRIPWIRE" in t for t in texts):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return self.inner.encode(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def tripwire_scorer() -> Scorer:
    s = scorer()
    return Scorer(s.index, Tripwire(s.text_encoder), top_k=s.top_k, decay=s.decay, beta=s.beta, mode=s.mode,
                  exclude_source=s.exclude_source)


def assert_same_results(got, want):
    """Equal key by key: numbers to 1e-6 (text encoders move ~1e-7 with batch padding), the rest exactly."""
    for g, w in zip(got, want, strict=True):
        assert set(RESULT_KEYS) <= set(g)
        for k in RESULT_KEYS:
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], abs=1e-6), k
            else:
                assert g[k] == w[k], k
