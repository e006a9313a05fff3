"""MLflow for the TRL backend: TRL's step metrics (``rewards/cim/mean``, ``kl``, ``completions/mean_length``,
``loss``, ...) and the reward function's ``cim_reward/*`` to the run, step by step (:class:`MlflowMetrics`);
the final model folder as the run's MLflow model (:func:`log_captioner`, pyfunc: a DataFrame with an
``image`` column of paths in, greedy captions out)."""
from __future__ import annotations

import math
from pathlib import Path

import mlflow.pyfunc
from transformers import TrainerCallback


class MlflowMetrics(TrainerCallback):
    """Every numeric value TRL logs, at its optimizer step, into the run ``run_id`` (no active run needed)."""

    def __init__(self, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client, self.run_id = MlflowClient(), run_id
        self.history: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        import time

        from mlflow.entities import Metric

        numeric = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numeric:
            return
        self.history.append({"step": state.global_step, **numeric})
        now = int(time.time() * 1000)
        finite = {k: v for k, v in numeric.items() if math.isfinite(v)}
        self.client.log_batch(self.run_id, metrics=[Metric(k.replace("train/", ""), v, now, state.global_step)
                                                    for k, v in finite.items()])


class HFCaptionerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = context.artifacts["model"]
        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).eval()
        self.prompt = (context.model_config or {}).get("prompt", "Describe this image in detail.")

    def predict(self, context, model_input, params=None) -> list[str]:
        import torch
        from PIL import Image

        out = []
        for path in model_input["image"]:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = self.processor(text=[text], images=[Image.open(path).convert("RGB")], return_tensors="pt")
            with torch.no_grad():
                ids = self.model.generate(**inputs, do_sample=False,
                                          max_new_tokens=int((params or {}).get("max_new_tokens", 128)))
            out.append(self.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:],
                                                   skip_special_tokens=True)[0].strip())
        return out


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "pillow", "mlflow")]


def log_captioner(folder: str | Path, name: str, prompt: str) -> str:
    """Log ``folder`` (a HF model folder with its processor) as the active run's model ``name``; its URI."""
    info = mlflow.pyfunc.log_model(name=name, python_model=HFCaptionerModel(), artifacts={"model": str(folder)},
                                   model_config={"prompt": prompt}, pip_requirements=_requirements(),
                                   tags={"cim.backend": "trl"})
    return info.model_uri
