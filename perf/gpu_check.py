"""Full-scale throughput on one GPU with no network: image encoder, text encoder, one GRPO step's reward.

Everything is random-initialised from its architecture (nothing is downloaded; no weights are needed for a
speed measurement) and sized as the paper's setup:

- OpenCLIP ViT-H-14 image tower in bfloat16: images/s on random 224x224 inputs;
- MPNet (the all-mpnet-base-v2 architecture, a transformers ``MPNetConfig``) in float16 as
  ``cim.encoders`` runs it on CUDA, mean-pooled and L2-normalised: captions/s. Captions are random words
  tokenised by a real (Rust) WordLevel tokenizer over a synthetic vocabulary, a stand-in for MPNet's own;
- the reward of one GRPO step: 1,280 and 2,560 captions (batch 256 x n 5, the release's step, and twice
  that) scored by this project's :class:`cim.reward.scorer.Scorer` over a 1M-row gallery (768-d float32 text
  like MPNet, 1024-d float16 image table like ViT-H) held in a :class:`cim.index.CorpusIndex` on the
  device (exact search: ``cim.index.search.exact_topk_torch``), with its latency split into encode / search /
  the rest;
- a short TRL GRPO run (``--trl-steps``, perf/trl_step.py): the TRL backend's device path, seconds per step;
- the released design's serial time for the same step (perf/released_design.py: one caption per call,
  full-gallery matmul + topk, K = 3): a sample of serial calls is timed and the per-call median is
  extrapolated to the step's caption count (reported as extrapolated).

Targets on an H100/H200 (reported, not asserted): the 2,560-caption step <= 1 s, and >= 20x faster than the
released serial design. Prints one JSON (and writes it with --out). Sized to finish within 10 minutes there.

Run on the GPU machine (it has torch, transformers, tokenizers, numpy; open_clip is NOT installed there and
has no network, so carry the wheels): here, `pip download --no-deps --only-binary=:all: -d .whl
open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13` (for the machine's Python), then there
`perf/gpu_check.sh` (it installs .whl/*.whl into /tmp/site when present and runs this file with
PYTHONPATH=src). Without open_clip the image part is skipped and says so.
On a CPU, toy sizes check that it works: `python perf/gpu_check.py --device cpu --rows 10000 --images 8
--clip-model ViT-B-32 --captions 16 32 --caption-words 24 --serial-sample 4` (tests/perf/test_perf_scripts.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from perf_report import emit, uptime  # noqa: E402

TEXT_DIM, IMAGE_DIM = 768, 1024          # all-mpnet-base-v2, ViT-H-14
TARGETS = {"step_2560_s": 1.0, "speedup_vs_released_serial": 20.0}


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def median_time(fn, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- image encoder ---------------------------------------------------------------------------------------------
def clip_images_per_s(args) -> dict:
    try:
        import open_clip
    except ImportError:
        return {"skipped": "open_clip is not installed (carry the open_clip_torch wheel; see the header)"}
    import torch

    t0 = time.perf_counter()
    model = open_clip.create_model(args.clip_model, pretrained=None, device=args.device)
    visual = model.visual.to(dtype=torch.bfloat16).eval()
    del model
    build_s = time.perf_counter() - t0
    size = getattr(visual, "image_size", (224, 224))
    size = size if isinstance(size, (tuple, list)) else (size, size)
    batch = min(args.image_batch, args.images)
    x = torch.randn(batch, 3, *size, device=args.device, dtype=torch.bfloat16)
    batches = max(1, args.images // batch)

    def run():
        with torch.inference_mode():
            for _ in range(batches):
                out = visual(x)
        return out

    run()  # warm-up (kernels, allocator)
    seconds = median_time(run, args.device, args.repeats)
    dim = int(run().shape[-1])
    del visual
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"model": args.clip_model, "weights": "random init", "dtype": "bfloat16", "image_size": list(size),
            "embedding_dim": dim, "batch": batch, "images_timed": batch * batches, "build_s": round(build_s, 1),
            "images_per_s": round(batch * batches / seconds, 1)}


# -- text encoder ----------------------------------------------------------------------------------------------
class RandomMPNet:
    """The all-mpnet-base-v2 architecture, random init, behind the ``TextEncoder`` interface the scorer uses
    (``encode(texts) -> (n, 768) float32``, rows L2-normalised; ``describe()``)."""

    def __init__(self, device: str, batch_size: int, vocab_words: int, max_tokens: int = 384):
        import torch
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import Whitespace
        from transformers import MPNetConfig, MPNetModel

        self.torch, self.device, self.batch_size, self.dim = torch, device, batch_size, TEXT_DIM
        config = MPNetConfig()   # its defaults are mpnet-base: 12 layers, 768 hidden, 12 heads, 514 positions
        vocab = {"[PAD]": 1, "[UNK]": 3, **{f"w{i}": 104 + i for i in range(vocab_words)}}
        self.tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
        self.tokenizer.pre_tokenizer = Whitespace()
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding(pad_id=1, pad_token="[PAD]")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.model = MPNetModel(config, add_pooling_layer=False).to(device=device, dtype=dtype).eval()
        self.config = {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
                       "heads": config.num_attention_heads, "dtype": str(dtype).replace("torch.", ""),
                       "max_tokens": max_tokens, "weights": "random init"}

    def encode(self, texts) -> "np.ndarray":  # noqa: F821
        torch = self.torch
        texts = list(texts)
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer.encode_batch(texts[start:start + self.batch_size])
            ids = torch.tensor([e.ids for e in enc], device=self.device)
            mask = torch.tensor([e.attention_mask for e in enc], device=self.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1).float() / m.sum(1).float().clamp(min=1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out).cpu().numpy()

    def describe(self) -> dict:
        return {"name": "random-mpnet", "model": "all-mpnet-base-v2 architecture", "dim": self.dim}


def captions(n: int, words: int, vocab_words: int, seed: int) -> list[str]:
    """``n`` captions of ``words/2 .. words`` random words (rollouts vary in length)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, words // 2), words + 1, n)
    return [" ".join(f"w{j}" for j in rng.integers(0, vocab_words, k)) for k in lengths]


# -- gallery and step ------------------------------------------------------------------------------------------
def gallery(rows: int, device: str, seed: int):
    """``(ids, text (N, 768) float32, image (N, 1024) float16)`` as host numpy arrays, drawn on ``device``."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    parts_t, parts_i = [], []
    for start in range(0, rows, 1 << 18):
        n = min(1 << 18, rows - start)
        t = torch.randn(n, TEXT_DIM, device=device, generator=gen)
        i = torch.randn(n, IMAGE_DIM, device=device, generator=gen)
        parts_t.append(torch.nn.functional.normalize(t, dim=-1).cpu())
        parts_i.append(torch.nn.functional.normalize(i, dim=-1).half().cpu())
    return [f"r{k}" for k in range(rows)], torch.cat(parts_t).numpy(), torch.cat(parts_i).numpy()


def step_and_released(args, encoder) -> dict:
    import numpy as np

    from cim.index import CorpusIndex
    from cim.reward.scorer import TIE_MARGIN, Scorer
    from released_design import RELEASED_BETA, RELEASED_DECAY, ReleasedReward, agreement

    t0 = time.perf_counter()
    ids, text, image = gallery(args.rows, args.device, args.seed)
    index = CorpusIndex.from_arrays(ids, text, image, device=args.device)
    index.xmax  # noqa: B018  (computed once, on the first search, otherwise)
    build_s = time.perf_counter() - t0
    scorer = Scorer(index, encoder, top_k=args.top_k, decay=RELEASED_DECAY, beta=RELEASED_BETA, mode="both",
                    exclude_source=True)
    rng = np.random.default_rng(args.seed + 1)
    most = max(args.captions)
    texts = captions(most, args.caption_words, args.vocab_words, args.seed)
    rows = rng.integers(0, args.rows, most)
    items = [{"caption": c, "image_id": f"r{r}"} for c, r in zip(texts, rows)]
    scorer.score(items[:64])   # warm-up: kernels, allocator, tokenizer
    out: dict = {"gallery": {"rows": args.rows, "text_dim": TEXT_DIM, "image_dim": IMAGE_DIM,
                             "bytes": {"text_fp32": int(text.nbytes), "image_fp16": int(image.nbytes),
                                       "text_on_device_fp32": int(text.nbytes) if index.search_device != "cpu"
                                       else 0},
                             "search_device": index.search_device, "build_s": round(build_s, 1)},
                 "scorer": {"top_k": args.top_k, "exclude_source": True, "steps": {}}}
    for n in args.captions:
        batch = items[:n]
        total = median_time(lambda: scorer.score(batch), args.device, args.repeats)
        encode = median_time(lambda: encoder.encode([it["caption"] for it in batch]), args.device, args.repeats)
        queries = encoder.encode([it["caption"] for it in batch])
        search = median_time(lambda: index.search(queries, args.top_k + 1 + TIE_MARGIN), args.device, args.repeats)
        out["scorer"]["steps"][str(n)] = {"latency_s": round(total, 4), "captions_per_s": round(n / total, 1),
                                          "encode_s": round(encode, 4), "search_s": round(search, 4),
                                          "rest_s": round(max(0.0, total - encode - search), 4)}
    out["encoder_captions_per_s"] = round(most / median_time(lambda: encoder.encode(texts), args.device,
                                                             args.repeats), 1)

    released = ReleasedReward(encoder.encode, text, image, device=args.device)
    del text
    sample = list(range(min(args.serial_sample, most)))
    released(texts[0], int(rows[0]))  # warm-up
    per_call = []
    for k in sample:
        sync(args.device)
        t1 = time.perf_counter()
        released(texts[k], int(rows[k]))
        sync(args.device)
        per_call.append(time.perf_counter() - t1)
    call_s = statistics.median(per_call)
    checked = agreement(released, scorer.score(items[:16]), texts[:16], rows[:16])
    out["released_serial"] = {"k": 3, "calls_timed": len(sample), "per_call_median_s": round(call_s, 5),
                              "per_call_mean_s": round(statistics.mean(per_call), 5),
                              "extrapolated": True, "agreement_with_scorer": checked,
                              "steps": {}}
    for n in args.captions:
        serial = call_s * n
        ours = out["scorer"]["steps"][str(n)]["latency_s"]
        out["released_serial"]["steps"][str(n)] = {"serial_s": round(serial, 2),
                                                   "scorer_speedup": round(serial / ours, 1)}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (toy sizes)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="gallery rows")
    ap.add_argument("--images", type=int, default=512, help="images timed through the image encoder")
    ap.add_argument("--image-batch", type=int, default=128)
    ap.add_argument("--clip-model", default="ViT-H-14", help="OpenCLIP architecture (random init)")
    ap.add_argument("--captions", type=int, nargs="+", default=[1280, 2560], help="captions per step")
    ap.add_argument("--caption-words", type=int, default=160, help="longest caption, in words (= tokens)")
    ap.add_argument("--vocab-words", type=int, default=20000, help="synthetic vocabulary size")
    ap.add_argument("--text-batch", type=int, default=128, help="text encoder batch (encoders.text.batch_size)")
    ap.add_argument("--top-k", type=int, default=3, help="K (3 as released)")
    ap.add_argument("--serial-sample", type=int, default=64, help="released design: serial calls timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-threads", type=int, default=1,
                    help="--device cpu: torch threads (1: on a shared machine more threads spin and slow it)")
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--trl-steps", type=int, default=3,
                    help="a short TRL GRPO run of the tiny Qwen2.5-VL (perf/trl_step.py); 0 skips it")
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA device; run with --device cpu for the toy check")
    started = time.perf_counter()
    result: dict = {"script": "perf/gpu_check.py", "argv": sys.argv[1:] if argv is None else argv,
                    "machine": {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
                                "cpus": os.cpu_count(), "uptime_before": uptime()}}
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(args.device)
        result["machine"].update(gpu=props.name, gpu_memory_bytes=int(props.total_memory),
                                 cuda=torch.version.cuda)
    else:
        torch.set_num_threads(args.cpu_threads)
    result["image_encoder"] = {"skipped": "--skip-images"} if args.skip_images else clip_images_per_s(args)
    encoder = RandomMPNet(args.device, args.text_batch, args.vocab_words)
    result["text_encoder"] = {**encoder.config, "caption_words_max": args.caption_words}
    result.update(step_and_released(args, encoder))
    result["text_encoder"]["captions_per_s"] = result.pop("encoder_captions_per_s")
    biggest = str(max(args.captions))
    latency = result["scorer"]["steps"][biggest]["latency_s"]
    speedup = result["released_serial"]["steps"][biggest]["scorer_speedup"]
    result["targets"] = {
        "applies": args.device.startswith("cuda") and args.rows >= 1_000_000 and int(biggest) >= 2560,
        "step_2560_s": {"target": TARGETS["step_2560_s"], "value": latency, "captions": int(biggest),
                        "met": latency <= TARGETS["step_2560_s"]},
        "speedup_vs_released_serial": {"target": TARGETS["speedup_vs_released_serial"], "value": speedup,
                                       "met": speedup >= TARGETS["speedup_vs_released_serial"]}}
    if args.trl_steps > 0:
        from trl_step import trl_steps

        result["trl_step"] = trl_steps(args.device, args.trl_steps)
    else:
        result["trl_step"] = {"skipped": "--trl-steps 0"}
    if args.device.startswith("cuda"):
        result["machine"]["gpu_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(args.device))
    result["machine"]["uptime_after"] = uptime()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
