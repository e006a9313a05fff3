"""Captioners: captions from a file, the transformers VLM path on a tiny randomly initialised LLaVA (the
real architecture and processor; no hub weights exist offline), bad input counted per row."""
import json

import numpy as np
import pytest

from cim.eval.captioners import (Decoding, FileCaptioner, HFVLMCaptioner, ImageItem, as_items, build_captioner,
                                 generate_captions)
from cim.errors import WeightsNotFound


def test_file_captioner_jsonl_and_json(tmp_path):
    f = tmp_path / "caps.jsonl"
    f.write_text('{"image_id": "a", "caption": "A cat."}\n{"id": "label", "image_id": "b", "caption": ""}\n')
    cap = build_captioner("file", str(f))
    rows, counts = generate_captions(cap, [("a", None), ("b", None), ("c", None)], "Describe.", tmp_path / "out.jsonl")
    assert [r["caption"] for r in rows] == ["A cat.", "", ""]
    assert counts == {"images": 3, "captioned": 1, "missing_images": 0, "not_in_file": 1, "failed": 0, "empty": 1}
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written[0]["prompt"] == "Describe." and written[0]["captioner"] == "file:caps.jsonl"
    assert written[2]["error"] == "image not in captions file" and written[2]["image_id"] == "c"
    g = tmp_path / "caps.json"
    g.write_text(json.dumps({"a": "A dog.", "b": ["A bird."]}))
    assert FileCaptioner(g).caption([ImageItem("b", None), ImageItem("a", None)], "x") == ["A bird.", "A dog."]
    with pytest.raises(ValueError, match="no 'image_id'"):
        (tmp_path / "bad.jsonl").write_text('{"caption": "x"}\n')
        FileCaptioner(tmp_path / "bad.jsonl")


def test_as_items(tmp_path):
    from cim.eval.benchmarks import Sample

    items = as_items([Sample("s1", tmp_path / "s1.jpg", ["r"]), ("s2", None), tmp_path / "s3.png"])
    assert items == [ImageItem("s1", tmp_path / "s1.jpg"), ImageItem("s2", None), ImageItem("s3", tmp_path / "s3.png")]


def tiny_llava(path):
    """A real LLaVA (CLIP vision tower + Llama) with random weights and a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    words = ["<pad>", "<unk>", "<eos>", "<image>", "user", "assistant", ":", "describe", "this", "image", "a",
             "red", "circle", "on", "grass", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   extra_special_tokens={"image_token": "<image>"})
    template = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}assistant :")
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                   tokenizer=fast, patch_size=16, vision_feature_select_strategy="default", chat_template=template,
                   num_additional_image_tokens=1).save_pretrained(path)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=16)
    text = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2, bos_token_id=2)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=3,
                                              vision_feature_select_strategy="default")).save_pretrained(path)


def test_hf_vlm_plumbing_on_tiny_llava(tmp_path):
    from PIL import Image

    model_dir = tmp_path / "tiny-llava"
    tiny_llava(model_dir)
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(img)
    cap = HFVLMCaptioner(str(model_dir), device="cpu", batch_size=2, decoding=Decoding(max_new_tokens=3))
    rows, counts = generate_captions(cap, [("a", img), ("b", None), ("c", tmp_path / "absent.png"), ("d", img)],
                                     "describe this image", tmp_path / "caps.jsonl")
    assert counts == {"images": 4, "captioned": 2, "missing_images": 1, "not_in_file": 0, "failed": 1, "empty": 0}
    assert rows[0]["caption"] == rows[3]["caption"] != ""          # greedy: same image, same caption
    assert rows[0]["decoding"]["max_new_tokens"] == 3 and rows[0]["captioner"] == f"hf:{model_dir}"
    assert "FileNotFoundError" in rows[2]["error"]


def test_hf_vlm_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound, match="local files only"):
        HFVLMCaptioner("Qwen/Qwen2.5-VL-7B-Instruct").caption([("a", tmp_path / "x.png")], "Describe.")


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2-VL-7B-Instruct",
                                   "llava-hf/llava-1.5-7b-hf", "OpenGVLab/InternVL3-8B-hf"])
def test_real_vlm_on_gpu(tmp_path, model):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from PIL import Image

    img = tmp_path / "img.png"
    Image.new("RGB", (224, 224), (200, 30, 30)).save(img)
    cap = HFVLMCaptioner(model, device="cuda", dtype="bfloat16", decoding=Decoding(max_new_tokens=32))
    try:
        text = cap.caption([("a", img)], "Describe this image in detail.")[0]
    except WeightsNotFound:
        pytest.skip(f"{model} not in the local HF cache")
    assert text.strip()

