"""Tokenizers of the real model families, trained offline with ``tokenizers`` on a handful of texts.

- :func:`qwen_tokenizer`: byte-level BPE in transformers' ``Qwen2Tokenizer`` (Qwen's pre-tokenizer), carrying
  Qwen's special tokens (``<|im_start|>``, ``<|im_end|>``, the vision tokens); with :data:`QWEN_VL_TEMPLATE`
  (Qwen2-VL / Qwen2.5-VL-Instruct's chat template) or :data:`QWEN3_TEMPLATE` (Qwen3's, with the
  ``enable_thinking`` switch the ``lm`` judge sets).
- :func:`t5_tokenizer`: a Unigram model in transformers' ``T5Tokenizer`` (``<pad>`` = 0 = the decoder start,
  ``</s>``, ``<unk>``), what the FACTUAL Flan-T5 parser loads.

Only the vocabulary is small: the classes, special tokens and templates are the families' own, so every
code path that tokenizes, applies a chat template or finds a special token runs as with the real models.
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

__all__ = ["QWEN_SPECIALS", "QWEN_VL_TEMPLATE", "QWEN3_TEMPLATE", "qwen_tokenizer", "t5_tokenizer"]

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
QWEN3_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN3_ADDED = ("<think>", "</think>")      # Qwen3 adds them as ordinary (non-special) added tokens

# Qwen2-VL-7B-Instruct / Qwen2.5-VL-7B-Instruct chat_template.json
QWEN_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")

# Qwen3's template, reduced to what a judge uses (no tools): system / user / assistant turns, and the empty
# think block the real template writes when enable_thinking is false
QWEN3_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
    "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def _bpe(texts: Iterable[str], specials: Sequence[str], vocab_size: int) -> tuple[dict, list]:
    """(vocab, merges) of a byte-level BPE trained on ``texts``; the specials take the first ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def qwen_tokenizer(texts: Iterable[str], *, chat_template: str, vision: bool = True, vocab_size: int = 600):
    """A ``Qwen2Tokenizer`` (byte-level BPE) with Qwen's special tokens and ``chat_template``."""
    from transformers import Qwen2Tokenizer

    specials = QWEN_SPECIALS if vision else QWEN3_SPECIALS
    vocab, merges = _bpe(texts, specials, vocab_size)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", chat_template=chat_template)
    tok.add_special_tokens({"additional_special_tokens": [s for s in specials if s != "<|endoftext|>"]})
    if not vision:
        tok.add_tokens(list(QWEN3_ADDED))
    return tok


def t5_tokenizer(texts: Iterable[str], vocab_size: int = 400):
    """A ``T5Tokenizer`` (Unigram, Metaspace) trained on ``texts``: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0)
