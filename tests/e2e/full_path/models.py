"""Tiny randomly initialised models of the real architectures, written offline to folders.

| builder | architecture | what loads it |
|---|---|---|
| :func:`policy` | ``Qwen2_5_VLForConditionalGeneration`` + ``Qwen2_5_VLProcessor`` | verl (``actor_rollout_ref.model.path``), ``cim caption --captioner hf`` |
| :func:`factual_parser` | ``T5ForConditionalGeneration`` + ``T5Tokenizer`` | ``eval.parser.name=factual`` |
| :func:`judge` | ``Qwen3ForCausalLM`` + Qwen3's chat template | ``eval.judge.name=lm`` |
| :func:`open_clip_config` | an OpenCLIP ViT model config (``open_clip.add_model_config``) | ``encoders.image.name=open_clip`` |

Weights are seeded (``torch.manual_seed``) and random: the models run every code path of the full-scale
ones, not their quality. Nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from e2e.full_path.tokenizers import QWEN3_TEMPLATE, QWEN_VL_TEMPLATE, qwen_tokenizer, t5_tokenizer

__all__ = ["policy", "factual_parser", "judge", "open_clip_config", "OPEN_CLIP_NAME", "IMAGE_PIXELS"]

OPEN_CLIP_NAME = "ViT-Tiny-16-smoke"
IMAGE_PIXELS = (28 * 28 * 4, 28 * 28 * 16)   # the policy's image processor: 4..16 patches of 28 px (1..4 tokens each)


def _seeded(seed: int):
    import torch

    torch.manual_seed(seed)


def policy(out: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A tiny Qwen2.5-VL-Instruct: processor (Qwen2VLImageProcessor + Qwen2Tokenizer + the chat template),
    config, generation config and random weights, as a hub snapshot lays them out."""
    import torch
    from transformers import (GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    tok = qwen_tokenizer(texts, chat_template=QWEN_VL_TEMPLATE, vision=True)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|vision_start|>",
                                                     "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")}
    image_processor = Qwen2VLImageProcessor(min_pixels=IMAGE_PIXELS[0], max_pixels=IMAGE_PIXELS[1])
    proc = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_VL_TEMPLATE)
    hidden, heads = 64, 4
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": hidden, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": heads, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                         "mrope_section": [2, 3, 3]},   # sums to head_dim / 2 = 8
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [1]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False)
    _seeded(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    # A trained Qwen-VL never writes its vision placeholders; random weights do, and verl's agent loop then
    # (rightly) fails computing M-RoPE positions for an image or video it has no pixels of. The tiny policy's
    # generation config suppresses them, standing in for what training gives a real model's distribution.
    vision = [ids[t] for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")]
    vision.append(tok.convert_tokens_to_ids("<|vision_pad|>"))
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                                               do_sample=False, suppress_tokens=sorted(vision))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def factual_parser(out: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A tiny T5 (the FACTUAL Flan-T5's architecture: gated-gelu, untied head) with a T5Tokenizer."""
    import torch
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    tok = t5_tokenizer(texts)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    _seeded(seed)
    model = T5ForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                                               eos_token_id=tok.eos_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def judge(out: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A tiny Qwen3 chat LM (Qwen2Tokenizer, Qwen3's special tokens and thinking switch)."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tok = qwen_tokenizer(texts, chat_template=QWEN3_TEMPLATE, vision=False)
    end, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=pad, eos_token_id=end, pad_token_id=pad)
    _seeded(seed)
    model = Qwen3ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(bos_token_id=pad, pad_token_id=pad, eos_token_id=[end, pad])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def open_clip_config(out: Path) -> Path:
    """An OpenCLIP ViT model config in open_clip's own format (``model_configs/*.json``): a 2-layer ViT-16
    image tower at 64 px and a 1-layer text tower. ``encoders.image.model`` takes its path; the
    encoder registers it with ``open_clip.add_model_config`` and builds it with ``pretrained: none``."""
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{OPEN_CLIP_NAME}.json"
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path
