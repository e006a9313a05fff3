"""verl's own data, rollout and reward machinery on CPU, with one stand-in: the rollout server.

In training, verl's ``AgentLoopManager`` sends each prompt to an ``AgentLoopWorker`` (a Ray actor) whose
``SingleTurnAgentLoop`` builds the prompt tokens with the processor (Continuous Token builder), asks the
``LLMServerClient``, which picks a server through the ``GlobalRequestLoadBalancer`` (a Ray actor) and calls
``generate`` on a rollout server replica -- vLLM's ``vLLMHttpServer`` (or SGLang / TensorRT-LLM) -- then
scores the finished rollout through a ``RewardLoopWorker`` of the ``RewardLoopManager`` (our
``compute_score`` posting to ``cim serve``), pads, computes M-RoPE position ids and the multimodal inputs.

All of that runs here as verl ships it. :class:`HFRolloutServer` stands in for the **rollout server replica**,
``verl.workers.rollout.vllm_rollout.vllm_async_server.vLLMHttpServer`` (the Ray actor a ``vLLMReplica`` of
``LLMServerManager`` starts; SGLang and TensorRT-LLM have their own): those engines need a GPU, so a Ray actor
with the same ``generate(prompt_ids, sampling_params, request_id, image_data, ...) -> TokenOutput`` runs
transformers' ``generate`` on the tiny policy, registered with verl's own load balancer
(``get_router_handle``). Like vLLM it computes the image features with the policy's own image processor, caps
``max_tokens`` as verl's vLLM server does, and returns the log-probs of the sampled tokens from the raw logits
(vLLM's default ``raw_logprobs``).
"""
from __future__ import annotations

import shlex
import uuid
from pathlib import Path
from typing import Any, Optional

__all__ = ["HFRolloutServer", "verl_overrides", "compose", "dataset_batch", "rollouts"]


class HFRolloutServer:
    """The stand-in for verl's vLLM rollout server (see the module docstring); wrap with ``ray.remote``."""

    def __init__(self, model_path: str, prompt_length: int, response_length: int, seed: int = 0, threads: int = 1):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        torch.set_num_threads(threads)
        self.processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(model_path, local_files_only=True,
                                                                 dtype=torch.float32).eval()
        self.prompt_length, self.response_length, self.seed = prompt_length, response_length, seed
        self.global_steps = 0
        self.requests = 0

    def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                 image_data: Optional[list[Any]] = None, video_data: Optional[list[Any]] = None,
                 audio_data: Optional[list[Any]] = None, mm_processor_kwargs: Optional[dict[str, Any]] = None,
                 priority: int = 0, **kwargs: Any):
        import torch
        from verl.workers.rollout.replica import TokenOutput

        if video_data is not None or audio_data is not None:
            raise ValueError("HFRolloutServer: only images")
        params = dict(sampling_params)
        # max_tokens as verl's vLLM server computes it
        max_tokens = params.pop("max_tokens", None) or params.pop("max_new_tokens", None) or min(
            self.response_length, self.prompt_length + self.response_length - len(prompt_ids))
        temperature = float(params.get("temperature", 1.0))
        top_k = int(params.get("top_k", -1) or -1)
        inputs: dict[str, Any] = {"input_ids": torch.tensor([list(prompt_ids)], dtype=torch.long)}
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if image_data:
            feats = self.processor.image_processor(images=list(image_data), return_tensors="pt",
                                                   **(mm_processor_kwargs or {}))
            inputs.update(pixel_values=feats["pixel_values"], image_grid_thw=feats["image_grid_thw"])
            # transformers builds M-RoPE positions only when told which tokens are image tokens
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.model.config.image_token_id).int()
        gen = {"max_new_tokens": int(max_tokens), "do_sample": temperature > 0, "output_logits": True,
               "return_dict_in_generate": True}
        if temperature > 0:
            gen.update(temperature=temperature, top_p=float(params.get("top_p", 1.0)), top_k=max(top_k, 0))
        self.requests += 1
        torch.manual_seed(self.seed + self.requests)
        with torch.no_grad():
            out = self.model.generate(**inputs, **gen)
        tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        logprobs = None
        if params.get("logprobs"):
            logprobs = [float(torch.log_softmax(step[0].float(), dim=-1)[tok]) for step, tok in zip(out.logits, tokens)]
        return TokenOutput(token_ids=tokens, log_probs=logprobs, stop_reason="completed", num_preempted=0,
                           extra_fields={"global_steps": self.global_steps})

    def stats(self) -> dict:
        return {"requests": self.requests}


def verl_overrides(dry_run_output: str) -> list[str]:
    """The verl overrides ``cim train --backend verl --dry-run`` prints (the command a GPU run executes)."""
    text = dry_run_output.replace("\\\n", " ")
    for line in text.splitlines():
        if "verl.trainer.main_ppo" in line:
            words = shlex.split(line)
            return words[words.index("verl.trainer.main_ppo") + 1:]
    raise ValueError("no `python -m verl.trainer.main_ppo` line in the output of `cim train --dry-run`")


def compose(overrides: list[str]):
    """verl's ``ppo_trainer.yaml`` composed with ``overrides`` (Hydra, as ``main_ppo`` does), validated by
    verl's ``validate_config``."""
    import os

    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from verl.trainer.main_ppo import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"),
                               version_base=None):
        cfg = hydra_compose("ppo_trainer", overrides=list(overrides))
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    return cfg


def dataset_batch(cfg, cache_dir: Path):
    """verl's ``RLHFDataset`` over ``data.train_files`` with the policy's tokenizer and processor (as the
    trainer loads them), its ``collate_fn`` over the first ``data.train_batch_size`` rows -> a ``DataProto``."""
    from omegaconf import open_dict
    from verl import DataProto
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    model = cfg.actor_rollout_ref.model.path
    tokenizer, processor = hf_tokenizer(model), hf_processor(model)
    data_cfg = cfg.data.copy()
    with open_dict(data_cfg):
        data_cfg.cache_dir = str(cache_dir)
        data_cfg.filter_overlong_prompts_workers = 1
    files = cfg.data.train_files
    ds = RLHFDataset(list(files) if not isinstance(files, str) else files, tokenizer, data_cfg, processor=processor)
    n = int(cfg.data.train_batch_size)
    rows = [ds[i] for i in range(min(n, len(ds)))]
    return ds, rows, DataProto.from_single_dict(collate_fn(rows)), processor


def rollouts(cfg, batch, seed: int = 0) -> tuple[Any, dict]:
    """One training step's rollouts as ``RayPPOTrainer.fit`` makes them: uid per prompt, the generation batch,
    ``rollout.n`` repeats, ``AgentLoopManager.generate_sequences`` with the reward loop's workers; returns
    (the trainer's batch after ``union``, facts about the run). Ray must be initialised."""
    import numpy as np
    import ray
    from verl.experimental.agent_loop.agent_loop import AgentLoopManager
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.router import get_router_handle

    rollout = cfg.actor_rollout_ref.rollout
    reward = RewardLoopManager(cfg)                         # RewardLoopWorker actors: our compute_score
    server = ray.remote(HFRolloutServer).options(num_cpus=1).remote(
        cfg.actor_rollout_ref.model.path, int(rollout.prompt_length), int(rollout.response_length), seed)
    router = get_router_handle(servers={"hf-rollout-0": server}, full_determinism=False)
    client = LLMServerClient(cfg, load_balancer_handle=router)
    manager = AgentLoopManager.create(cfg, client, reward_loop_worker_handles=reward.reward_loop_worker_handles)

    batch.meta_info["temperature"] = rollout.temperature
    batch.non_tensor_batch["uid"] = np.array([str(uuid.UUID(int=seed * 1000 + i)) for i in range(len(batch))],
                                             dtype=object)
    gen_batch = RayPPOTrainer._get_gen_batch(None, batch)     # verl's own split (it does not use self)
    gen_batch.meta_info["global_steps"] = 1
    gen_out = manager.generate_sequences(gen_batch.repeat(repeat_times=int(rollout.n), interleave=True))
    timing = gen_out.meta_info.pop("timing", {})
    full = batch.repeat(repeat_times=int(rollout.n), interleave=True).union(gen_out)
    facts = {"server_requests": ray.get(server.stats.remote())["requests"], "reward_workers":
             len(reward.reward_loop_worker_handles or []), "agent_loop_workers": len(manager.agent_loop_workers),
             "timing": {k: float(v) for k, v in timing.items() if "generate_sequences" in k or "compute_score" in k}}
    for actor in [server, router, *manager.agent_loop_workers, *(reward.reward_loop_workers or [])]:
        ray.kill(actor)
    return full, facts
