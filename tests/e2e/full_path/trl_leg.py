"""The ``trl-train`` leg of ``make smoke-full``: ``cim train --backend trl`` (TRL's GRPOTrainer) on the tiny
random Qwen2.5-VL with the CIM reward from a ``cim serve`` the command starts on loopback, then
``cim caption --captioner hf`` of the benchmark from its ``final/`` folder. One function, one step."""
from __future__ import annotations

import json
from pathlib import Path

from e2e.full_path.runner import Context, StepFailed

STEPS = 2


def trl_train(ctx: Context) -> dict:
    out = "checkpoints/trl"
    ctx.cim("train", "--backend", "trl", "train.trl.model_path=models/policy", f"train.trl.out_dir={out}",
            f"train.trl.max_steps={STEPS}", "train.trl.prompts_per_step=1", "train.grpo.group_size=4",
            "train.trl.max_completion_length=16", "train.trl.lr=1.0e-3", "train.trl.save_steps=1",
            f"train.service.port={ctx.state['port']}", timeout_s=900)
    state = json.loads(max((ctx.out / out / "trainer").glob("checkpoint-*"),
                           key=lambda p: int(p.name.split("-")[1])).joinpath("trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    if len(logs) != STEPS or not all(isinstance(h["loss"], float) for h in logs):
        raise StepFailed(f"trl: {len(logs)} of {STEPS} steps logged a loss")
    captions = Path("reports/captions/trl/captions.jsonl")
    ctx.cim("caption", "--captioner", "hf", "--model", f"{out}/final", "--benchmark", "full-tiny",
            "--out", str(captions))
    rows = [json.loads(line) for line in (ctx.out / captions).read_text().splitlines() if line.strip()]
    errors = [r for r in rows if r.get("error")]
    if not rows or errors:
        raise StepFailed(f"trl: {len(errors)} of {len(rows)} benchmark captions failed")
    return {"steps": len(logs), "reward_per_step": [h.get("rewards/cim/mean") for h in logs],
            "kl": [h.get("kl") for h in logs], "loss": [h["loss"] for h in logs], "final": f"{out}/final",
            "captions": str(captions), "images": len(rows), "example": rows[0]["caption"][:80]}
