"""A short TRL GRPO run for perf/gpu_check.py (``--trl-steps N``): TRL's GRPOTrainer, as ``cim train --backend
trl`` configures it (:func:`cim.train.trl.settings.grpo_kwargs`), on the tiny random Qwen2.5-VL of the
full-scale chain (``tests/e2e/full_path/models.py``'s ``policy``) with random 64-px images and a stand-in reward (caption
length; the service is timed by the rest of gpu_check). It checks the backend's device path (bfloat16 on a
GPU, generation, the KL reference, the update) and reports seconds per step and peak memory, not a 7B's
throughput. Needs trl (carry its wheel like open_clip's: perf/gpu_check.sh installs .whl/*.whl)."""
from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path


def trl_steps(device: str, steps: int, group: int = 4, prompts: int = 2) -> dict:
    try:
        import numpy as np
        import trl
        from datasets import Dataset, Image
        from PIL import Image as PILImage

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the full-path harness
        from cim.config import load_config
        from e2e.full_path.models import policy
        from cim.train.trl.settings import grpo_kwargs
    except ImportError as exc:   # the GPU machine lacks trl unless its wheel is carried (.whl/)
        return {"skipped": f"{exc} (carry trl-1.16.0-py3-none-any.whl in .whl/ for perf/gpu_check.sh)"}

    with tempfile.TemporaryDirectory() as tmp:
        words = ["a", "red", "blue", "circle", "square", "on", "the", "left", "of", "Describe this image in detail."]
        model = policy(Path(tmp) / "policy", [" ".join(words)] * 4)
        rng = np.random.default_rng(0)
        images = [PILImage.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(8)]
        ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": "Describe this image in detail."}]] * 8,
                                "image": images}).cast_column("image", Image())
        cfg = load_config(None, [f"train.grpo.group_size={group}", f"train.trl.prompts_per_step={prompts}",
                                 f"train.trl.max_steps={steps}", "train.trl.max_completion_length=16",
                                 f"train.trl.out_dir={tmp}/out", "train.trl.save_steps=100000",
                                 "train.trl.lr=1e-4"])
        kwargs = grpo_kwargs(cfg)
        if device == "cpu":
            kwargs["use_cpu"] = True

        def length(completions, **_):
            return [float(len(str(c[-1]["content"]).split())) for c in completions]

        args = trl.GRPOConfig(**kwargs)
        trainer = trl.GRPOTrainer(model=str(model), reward_funcs=[length], args=args, train_dataset=ds)
        import torch

        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):   # the Trainer prints its logs: stdout is gpu_check's JSON
            trainer.train()
        wall = time.perf_counter() - t0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        out = {"trl": trl.__version__, "steps": len(losses), "rollouts_per_step": group * prompts,
               "bf16": bool(args.bf16), "s_per_step": round(wall / max(1, len(losses)), 3),
               "losses_finite": all(math.isfinite(x) for x in losses)}
        if device.startswith("cuda"):
            out["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        return out
