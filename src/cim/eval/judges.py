"""Relations QA: a judge answers published yes/no questions from the candidate caption alone.

``judge.answer(question, caption) -> JudgeAnswer(label, raw)`` with ``label`` one of ``"yes"``, ``"no"``,
``"unknown"`` (the caption does not say). An LLM reply that is none of these is recorded as ``unknown``
with ``parsed=False`` and counted separately (``unparseable``).

Judges (registered by name in :data:`JUDGES`, ``eval.judge.name``):

- ``lm`` / ``qwen3``: :class:`ChatLMJudge` — an instruction-tuned causal LM through transformers (Qwen3 by
  default: ``Qwen/Qwen3-8B``; any local path or cached hub name; thinking disabled; greedy), or through vLLM
  when installed (``backend="vllm"``). Local files only. This is the paper's judge family (Qwen3).
- ``triples``: :class:`TripleJudge` — **offline**, no language model: the question and the caption are both
  parsed into ``(subject, relation, object)`` triples by the scene-graph parser; the answer is ``yes`` when a
  question triple is supported by a caption triple (subject and object equal or WordNet synonyms —
  whole-word substring, not the ``man``/``woman`` quirk —, the spatial relation the same, or the inverse
  relation with subject and object swapped, and verbs compatible), ``no`` when the caption states a
  contradicting spatial relation for the same pair, ``unknown`` otherwise (spatial classes, inverses and
  contradictions: :mod:`cim.relations`). Its name says ``offline`` in every output.

:func:`relations_qa` scores a set of captions and writes the protocol into the result:
accuracy = #(judge label == published answer) / #questions whose published answer is yes/no. ``unknown``
is never equal to a published answer, so it counts as wrong (the published answers are ~91-96% "Yes": a
caption that does not state a relation must not earn it). Questions with free-text published answers are
left out and counted; an empty caption is answered ``unknown`` without asking the judge (counted).
Headline = micro average over questions; the per-image (macro) mean is reported too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from statistics import fmean
from typing import Mapping, Optional, Protocol, Sequence

from cim.errors import WeightsNotFound
from cim.eval.capture import synonym_match
from cim.eval.parsers import SceneGraphParser, Triple
from cim import plugins
from cim.config import choices
from cim.registry import Registry
from cim.relations import CONTRADICTS, INVERSE, is_symmetric, spatial_class

LABELS = ("yes", "no", "unknown")
BACKENDS = choices("eval.judge.backend")   # how a chat LM judge runs
DEFAULT_LM_JUDGE = "Qwen/Qwen3-8B"

JUDGE_PROMPT = (
    "Here is a description of an image:\n\n{caption}\n\n"
    "Using only this description, answer the question: {question}\n"
    "Reply with exactly one word: \"yes\" if the description states or clearly implies it, \"no\" if the "
    "description contradicts it, or \"unknown\" if the description does not say."
)


@dataclass(frozen=True)
class JudgeAnswer:
    label: str          # yes | no | unknown
    raw: str            # the judge's own output (an LLM's text; the offline judge's evidence)
    parsed: bool = True  # False: the raw reply was not yes/no/unknown (label set to unknown)


class Judge(Protocol):
    name: str
    offline: bool       # True: no language model (its numbers are labelled offline)

    def answer(self, question: str, caption: str) -> JudgeAnswer: ...

    def answer_many(self, pairs: Sequence[tuple[str, str]]) -> list[JudgeAnswer]: ...

    def describe(self) -> dict: ...


_UNKNOWN_PHRASES = ("unknown", "not say", "not mention", "not specif", "cannot", "can't", "unclear",
                    "not stated", "no information", "doesn't say", "does not state", "not enough")


def parse_reply(raw: str) -> JudgeAnswer:
    """An LLM reply -> label. ``<think>`` blocks are dropped; the first word decides when it is yes/no/unknown."""
    text = re.sub(r"<think>.*?</think>", " ", raw or "", flags=re.S).strip().lower()
    first = re.findall(r"[a-z']+", text)[:1]
    if first and first[0] in LABELS:
        return JudgeAnswer(first[0], raw)
    if any(p in text for p in _UNKNOWN_PHRASES):
        return JudgeAnswer("unknown", raw)
    return JudgeAnswer("unknown", raw, parsed=False)


# --------------------------------------------------------------------------------------------- LLM judge
class ChatLMJudge:
    """An instruction-tuned LM as the judge (Qwen3 by hub name or path), transformers or vLLM, local only."""

    offline = False

    def __init__(self, model: str = DEFAULT_LM_JUDGE, backend: str = "transformers", device: str = "auto",
                 batch_size: int = 16, max_new_tokens: int = 8, prompt: str = JUDGE_PROMPT, dtype: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.model_name, self.backend, self.device = model, backend, device
        self.batch_size, self.max_new_tokens, self.prompt, self.dtype = batch_size, max_new_tokens, prompt, dtype
        self._llm = self._tok = self._model = None

    @property
    def name(self) -> str:
        return f"lm:{self.model_name}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "llm", "offline": False, "model": self.model_name,
                "backend": self.backend, "decoding": {"greedy": True, "max_new_tokens": self.max_new_tokens,
                                                      "enable_thinking": False}, "prompt": self.prompt}

    def _chat_text(self, tok, content: str) -> str:
        messages = [{"role": "user", "content": content}]
        kwargs = {"tokenize": False, "add_generation_prompt": True}
        try:
            return tok.apply_chat_template(messages, enable_thinking=False, **kwargs)
        except TypeError:  # templates without the thinking switch
            return tok.apply_chat_template(messages, **kwargs)

    def _load(self):
        if self._model is not None or self._llm is not None:
            return
        missing = (f"judge model {self.model_name!r} is not on this machine (local files only): download it "
                   f"where the hub is reachable and copy the HF cache, or pass a local folder "
                   f"(eval.judge.model=/path); offline, use eval.judge.name=triples")
        if self.backend == "vllm":
            try:
                from vllm import LLM
            except ImportError as exc:
                raise WeightsNotFound("backend=vllm needs `pip install vllm`") from exc
            try:
                self._llm = LLM(model=self.model_name, dtype=self.dtype)
            except (OSError, ValueError) as exc:
                raise WeightsNotFound(missing) from exc
            self._tok = self._llm.get_tokenizer()
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.model_name, local_files_only=True, padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(self.model_name, local_files_only=True, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise WeightsNotFound(missing) from exc
        from cim.encoders.base import resolve_device

        device = resolve_device(self.device)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._tok, self._model, self._device = tok, model.to(device).eval(), device

    def answer(self, question: str, caption: str) -> JudgeAnswer:
        return self.answer_many([(question, caption)])[0]

    def complete(self, prompts: Sequence[str]) -> list[str]:
        """Raw replies to user messages (chat template applied, greedy)."""
        self._load()
        texts = [self._chat_text(self._tok, p) for p in prompts]
        if self._llm is not None:
            from vllm import SamplingParams

            outs = self._llm.generate(texts, SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens))
            return [o.outputs[0].text for o in outs]
        import torch

        replies: list[str] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self._tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True).to(self._device)
            with torch.no_grad():
                ids = self._model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                           pad_token_id=self._tok.pad_token_id)
            replies.extend(self._tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        return replies

    def answer_many(self, pairs: Sequence[tuple[str, str]]) -> list[JudgeAnswer]:
        return [parse_reply(r) for r in self.complete([self.prompt.format(question=q, caption=c) for q, c in pairs])]


# ----------------------------------------------------------------------------------------- offline judge
_FILLER = {"to", "of", "the", "a", "at", "top", "side", "be", "is", "are"}


def split_relation(relation: str) -> tuple[Optional[str], str]:
    """``"sit to left of"`` -> (``"left"``, ``"sit"``): the spatial class (:mod:`cim.relations`) and the
    remaining verb words."""
    spatial, text = spatial_class(relation)
    verb = " ".join(w for w in text.split() if w not in _FILLER)
    return spatial, verb


class TripleJudge:
    """Offline judge: question triples against caption triples (see the module docstring)."""

    offline = True

    def __init__(self, parser: SceneGraphParser):
        self.parser = parser

    @property
    def name(self) -> str:
        return f"offline-triples[{self.parser.name}]"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "offline-triple-matching", "offline": True, "parser": self.parser.name,
                "rule": "yes: a question triple supported by a caption triple (heads equal or WordNet synonyms, "
                        "same spatial relation or its inverse with heads swapped, compatible verbs); no: the "
                        "opposite spatial relation for the same heads; unknown: otherwise"}

    @staticmethod
    def _same(a: str, b: str) -> bool:
        return a == b or synonym_match(a, b, "word")

    def _verdict(self, q: Triple, c: Triple) -> Optional[str]:
        (qs, qr, qo), (cs, cr, co) = q, c
        q_sp, q_verb = split_relation(qr)
        c_sp, c_verb = split_relation(cr)
        verbs_ok = not q_verb or not c_verb or self._same(q_verb, c_verb)
        if self._same(qs, cs) and self._same(qo, co):
            if q_sp == c_sp and verbs_ok:
                return "yes"
            if c_sp in CONTRADICTS.get(q_sp, ()):
                return "no"
        if self._same(qs, co) and self._same(qo, cs) and q_sp is not None:
            if INVERSE.get(q_sp) == c_sp and (not q_verb or not c_verb):
                return "yes"
            if q_sp == c_sp and q_sp in INVERSE and not is_symmetric(q_sp):
                return "no"
        return None

    def _answer(self, q_triples: Sequence[Triple], c_triples: Sequence[Triple]) -> JudgeAnswer:
        verdicts = {}
        for q in q_triples:
            for c in c_triples:
                v = self._verdict(q, c)
                if v:
                    verdicts.setdefault(v, (q, c))
        for label in ("yes", "no"):
            if label in verdicts:
                q, c = verdicts[label]
                return JudgeAnswer(label, f"question {q} vs caption {c}")
        return JudgeAnswer("unknown", f"question triples {list(q_triples)}; no caption triple decides")

    def answer(self, question: str, caption: str) -> JudgeAnswer:
        return self.answer_many([(question, caption)])[0]

    def answer_many(self, pairs: Sequence[tuple[str, str]]) -> list[JudgeAnswer]:
        texts = sorted({t for pair in pairs for t in pair})
        graphs = dict(zip(texts, self.parser.parse_many(texts)))
        return [self._answer(graphs[q].relations, graphs[c].relations) for q, c in pairs]


# ----------------------------------------------------------------------------------------------- registry
# name -> builder(model or None, *, parser, backend, device) -> Judge
JUDGES: Registry = plugins.JUDGES


@JUDGES.register("triples")
def _triple_judge(model: str | None, *, parser: SceneGraphParser | None, backend: str, device: str) -> Judge:
    if parser is None:
        raise ValueError("the offline triple judge needs a scene-graph parser")
    return TripleJudge(parser)


@JUDGES.register("lm")         # any chat LM (eval.judge.model)
@JUDGES.register("qwen3")      # the same; the name the paper's setting goes by
def _chat_lm_judge(model: str | None, *, parser: SceneGraphParser | None, backend: str, device: str) -> Judge:
    return ChatLMJudge(model or DEFAULT_LM_JUDGE, backend=backend, device=device)


def build_judge(name: str = "triples", model: str | None = None, parser: SceneGraphParser | None = None,
                backend: str = "transformers", device: str = "auto") -> Judge:
    """A registered judge by name: ``triples`` (offline, needs ``parser``), ``lm`` / ``qwen3`` (a chat LM,
    default Qwen/Qwen3-8B)."""
    return JUDGES.get(name)(model, parser=parser, backend=backend, device=device)


# ------------------------------------------------------------------------------------------------ scoring
@dataclass
class RelationsQAResult:
    accuracy: float                    # micro over scored questions (headline)
    accuracy_per_image: float          # macro: mean of per-image accuracies
    counts: dict[str, int]
    protocol: dict
    records: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"relations_qa": self.accuracy, "relations_qa_per_image": self.accuracy_per_image,
                "counts": self.counts, "protocol": self.protocol}


def _published(answer: str) -> Optional[str]:
    a = re.sub(r"[^a-z]", "", (answer or "").lower())
    return a if a in ("yes", "no") else None


def relations_qa(judge: Judge, questions: Mapping[str, Mapping[str, str]], captions: Mapping[str, str]
                 ) -> RelationsQAResult:
    """Accuracy of ``judge``'s answers from each caption against the published yes/no answers."""
    counts = {"images": 0, "questions": 0, "scored": 0, "correct": 0, "non_yes_no_reference": 0,
              "missing_candidate": 0, "unknown_id": sum(1 for k in captions if k not in questions),
              "empty_candidate": 0, "yes": 0, "no": 0, "unknown": 0, "unparseable": 0}
    asks: list[tuple[str, str, str, str]] = []          # (id, question, published, caption)
    for sid in sorted(questions):
        if sid not in captions:
            counts["missing_candidate"] += 1
            continue
        counts["images"] += 1
        for q in sorted(questions[sid]):
            counts["questions"] += 1
            pub = _published(questions[sid][q])
            if pub is None:
                counts["non_yes_no_reference"] += 1
                continue
            asks.append((sid, q, pub, captions[sid] or ""))
    to_judge = [(q, c) for _, q, _, c in asks if c.strip()]
    answers = iter(judge.answer_many(to_judge) if to_judge else [])
    records, per_image = [], {}
    for sid, q, pub, cap in asks:
        if cap.strip():
            ans = next(answers)
        else:
            counts["empty_candidate"] += 1
            ans = JudgeAnswer("unknown", "(empty caption: judge not asked)")
        counts[ans.label] += 1
        counts["unparseable"] += 0 if ans.parsed else 1
        ok = ans.label == pub
        counts["scored"] += 1
        counts["correct"] += ok
        per_image.setdefault(sid, []).append(ok)
        records.append({"id": sid, "question": q, "published": pub, "label": ans.label, "raw": ans.raw,
                        "parsed": ans.parsed, "correct": ok})
    describe = judge.describe()
    protocol = {
        "metric": "Relations QA", "judge": judge.name, "judge_details": describe,
        "offline_judge": bool(describe.get("offline")),
        "prompt": describe.get("prompt", "n/a (no language model)"),
        "labels": list(LABELS),
        "scoring": "accuracy = #(label == published yes/no) / #questions with a yes/no published answer; "
                   "'unknown' (caption does not say) and unparseable replies count as wrong",
        "excluded": "questions whose published answer is not yes/no (counted as non_yes_no_reference)",
        "empty_caption": "answered unknown without asking the judge",
        "averaging": "micro over questions (headline); per-image macro mean also reported",
    }
    acc = counts["correct"] / counts["scored"] if counts["scored"] else float("nan")
    macro = fmean(sum(v) / len(v) for v in per_image.values()) if per_image else float("nan")
    return RelationsQAResult(acc, macro, counts, protocol, records)
