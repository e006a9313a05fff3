"""Relations QA: reply parsing, the offline triple judge on hand-built cases, the scoring protocol, and the
chat-LM judge's plumbing on a tiny randomly initialised model (no hub weights exist offline)."""
import pytest

from cim.eval.judges import (ChatLMJudge, JudgeAnswer, TripleJudge, build_judge, parse_reply, relations_qa,
                             split_relation)
from cim.errors import WeightsNotFound
from cim.eval.parsers import SpacyParser


@pytest.fixture(scope="module")
def judge():
    return TripleJudge(SpacyParser())


def test_parse_reply():
    assert parse_reply("Yes.") == JudgeAnswer("yes", "Yes.")
    assert parse_reply("<think>\n\n</think>\n\nNo").label == "no"
    assert parse_reply("The description does not mention it.").label == "unknown"
    bad = parse_reply("Perhaps a cat")
    assert (bad.label, bad.parsed) == ("unknown", False)


def test_split_relation():
    assert split_relation("sit to left of") == ("left", "sit")
    assert split_relation("in front of") == ("front", "")
    assert split_relation("hold") == (None, "hold")


@pytest.mark.parametrize("question,caption,label", [
    ("Is the dog on the sofa?", "A dog sleeps on a sofa.", "yes"),
    ("Is the dog on the sofa?", "A dog sleeps under the sofa.", "no"),
    ("Is the dog on the sofa?", "A cat lies on a sofa.", "unknown"),
    ("Is the red circle to the left of the blue square?", "A red circle is to the left of a blue square.", "yes"),
    ("Is the red circle to the left of the blue square?", "A big blue square is to the right of a red circle.", "yes"),
    ("Is the red circle to the left of the blue square?", "A blue square is to the left of a red circle.", "no"),
    ("Is the red circle to the right of the blue square?", "A red circle is to the left of a blue square.", "no"),
    ("Does the man hold an umbrella?", "A man holds a black umbrella.", "yes"),
])
def test_triple_judge(judge, question, caption, label):
    ans = judge.answer(question, caption)
    assert ans.label == label, ans.raw
    assert judge.name.startswith("offline-triples[spacy-rules")


def test_relations_qa_protocol_and_counts(judge):
    questions = {
        "1": {"Is the dog on the sofa?": "Yes", "Is the dog under the sofa?": "No", "Where is the dog?": "The sofa"},
        "2": {"Is the cat on the mat?": "Yes"},
        "3": {"Is the bird in the tree?": "Yes"},
        "4": {"Is the cup on the table?": "Yes"},
    }
    captions = {"1": "A dog sleeps on a sofa.", "2": "A cat sits next to a chair.", "3": "", "9": "stray"}
    res = relations_qa(judge, questions, captions)
    # 1: yes (correct); "under" vs "on" -> no (correct); free-text answer excluded. 2: unknown (wrong).
    # 3: empty caption -> unknown without asking (wrong). 4: no caption -> not scored, counted.
    assert res.counts["scored"] == 4 and res.counts["correct"] == 2
    assert res.accuracy == pytest.approx(0.5) and res.accuracy_per_image == pytest.approx((1 + 0 + 0) / 3)
    assert (res.counts["non_yes_no_reference"], res.counts["missing_candidate"], res.counts["unknown_id"],
            res.counts["empty_candidate"]) == (1, 1, 1, 1)
    assert (res.counts["yes"], res.counts["no"], res.counts["unknown"]) == (1, 1, 2)
    p = res.protocol
    assert p["offline_judge"] is True and "unknown" in p["scoring"] and p["averaging"].startswith("micro")
    assert len(res.records) == 4 and res.records[0]["raw"]


def test_build_judge():
    assert isinstance(build_judge("qwen3"), ChatLMJudge) and build_judge("qwen3").describe()["model"] == "Qwen/Qwen3-8B"
    with pytest.raises(ValueError):
        build_judge("triples")
    with pytest.raises(ValueError):
        build_judge("gpt")


def test_lm_judge_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound, match="eval.judge.name=triples"):
        ChatLMJudge("Qwen/Qwen3-8B").answer("Is it?", "A cat.")


def tiny_chat_model(path):
    """A real (randomly initialised) Llama-architecture chat model with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<eos>", "yes", "no", "unknown", "a", "cat", "is", "there", "user", "assistant", ":"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}assistant :"
    fast.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=0, eos_token_id=2, bos_token_id=2)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)


def test_lm_judge_plumbing_on_a_tiny_model(tmp_path):
    tiny_chat_model(tmp_path)
    judge = ChatLMJudge(str(tmp_path), device="cpu", max_new_tokens=3, batch_size=2)
    res = relations_qa(judge, {"1": {"is there a cat": "Yes", "is a cat there": "No"}, "2": {"a cat": "Yes"}},
                       {"1": "a cat", "2": "there is a cat"})
    c = res.counts
    assert c["scored"] == 3 and c["yes"] + c["no"] + c["unknown"] == 3
    assert all(r["raw"] is not None for r in res.records)       # raw text kept, whatever the random model said
    assert res.protocol["offline_judge"] is False and "{caption}" in res.protocol["prompt"]


@pytest.mark.gpu
def test_qwen3_judge_on_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    judge = ChatLMJudge("Qwen/Qwen3-8B", device="cuda")
    try:
        ans = judge.answer("Is the dog on the sofa?", "A brown dog sleeps on a red sofa.")
    except WeightsNotFound:
        pytest.skip("Qwen3-8B is not in the local HF cache")
    assert ans.label == "yes", ans.raw
