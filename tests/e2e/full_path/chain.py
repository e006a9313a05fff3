"""The full-scale path, step by step, on the full-tiny profile (``configs/profiles/full-tiny.yaml``).

Each step checks what it hands the next one; the first that fails stops the chain (:mod:`e2e.full_path.runner`).
Commands run through the ``cim`` CLI in the out folder; the verl steps run verl's own classes in this
process and in Ray actors (:mod:`e2e.full_path.rollout`, :mod:`e2e.full_path.grpo`).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from e2e.full_path.runner import Context, Step, StepFailed, cim_command
from e2e.full_path.trl_leg import trl_train

PROFILE = Path(__file__).resolve().parents[3] / "configs" / "profiles" / "full-tiny.yaml"
# what every caption gets a number for; the fine-grained scores are None when every sample is skipped (the released
# protocol skips a sample whose candidate has no object with an attribute: the random FACTUAL T5 finds none)
ALWAYS = ("capture", "capture_object_f1", "capture_attribute_f1", "capture_relation_f1", "relations_qa", "bleu4",
          "meteor", "cim", "cim_grc", "cim_qir")
FINE_GRAINED = ("object_precision", "object_recall", "object_f1", "attribute_precision", "attribute_recall",
                "attribute_f1")


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise StepFailed(message)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- steps
def build(ctx: Context) -> dict:
    """Tiny random models of the real architectures and the data, offline."""
    from e2e.full_path import data, models

    out = ctx.out
    shutil.copyfile(ctx.state["profile"], out / "params.yaml")
    info = data.build(out)
    ctx.state["counts"] = info["counts"]
    texts = data.tokenizer_texts(out)
    m = out / "models"
    paths = {"policy": models.policy(m / "policy", texts), "factual": models.factual_parser(m / "factual", texts),
             "judge": models.judge(m / "judge", texts), "open_clip": models.open_clip_config(m / "open_clip")}
    from cim.config import load_config

    cfg = load_config(out / "params.yaml")
    expect(Path(out / cfg.encoders.image.model).resolve() == paths["open_clip"].resolve(),
           f"the profile's encoders.image.model ({cfg.encoders.image.model}) is not the config written here")
    for key, name in (("train.verl.model_path", "policy"), ("eval.parser.model", "factual"),
                      ("eval.judge.model", "judge")):
        value = Path(out / _select(cfg, key))
        expect(value.resolve() == paths[name].resolve(), f"the profile's {key} is not {paths[name]}")
    return {"models": {k: str(v.relative_to(out)) for k, v in paths.items()}, "data": info["counts"],
            "benchmark": str(Path(info["benchmark"]).relative_to(out))}


def _select(cfg, key: str):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key)


def manifest(ctx: Context) -> dict:
    """The release files -> corpus manifest (training pairs first, then DenseFusion rows) + training manifest."""
    ctx.cim("manifest", "--format", "sc-captioner-sft", "--annotations", "data/release/train_sft.json",
            "--images", "data/world/images", "--out", "data/train_pairs.jsonl", "--train-out", "data/train.jsonl",
            "--on-missing", "fail")
    ctx.cim("manifest", "--format", "densefusion", "--annotations", "data/release/densefusion.jsonl",
            "--images", "data/world/images", "--out", "data/densefusion.jsonl", "--on-missing", "fail")
    ctx.cim("manifest", "--concat", "data/train_pairs.jsonl", "data/densefusion.jsonl", "--out", "data/corpus.jsonl")
    corpus, train = _jsonl(ctx.out / "data/corpus.jsonl"), _jsonl(ctx.out / "data/train.jsonl")
    world = _jsonl(ctx.out / "data/world/corpus.jsonl")
    expect(len(corpus) == len(world), f"corpus manifest has {len(corpus)} rows, the world {len(world)}")
    expect([r["id"] for r in corpus[:len(train)]] == [r["id"] for r in train],
           "the gallery does not start with the training pairs")
    expect(all(r.get("prompt") for r in train), "training rows without the release's prompt")
    return {"corpus_rows": len(corpus), "train_rows": len(train), "first_ids": [r["id"] for r in corpus[:3]]}


def index(ctx: Context) -> dict:
    """open_clip (tiny ViT config, random) + all-mpnet-base-v2 + FAISS over the corpus, sources by id."""
    ctx.cim("index", "--no-progress")
    meta = json.loads((ctx.out / "data/index/meta.json").read_text())
    corpus = _jsonl(ctx.out / "data/corpus.jsonl")
    sources = _jsonl(ctx.out / "data/world/sources.jsonl")
    expect(meta["rows"] == len(corpus), f"index has {meta['rows']} rows for {len(corpus)} corpus pairs")
    expect((meta.get("sources") or {}).get("rows") == len(sources), "not every source image was embedded")
    enc = meta.get("encoders", {})
    expect("open_clip" in json.dumps(enc.get("image", enc)) and "mpnet" in json.dumps(enc.get("text", enc)),
           f"index encoders are not open_clip + mpnet: {json.dumps(enc)[:200]}")
    expect((ctx.out / "data/index/text.faiss").is_file(), "no FAISS index file")
    return {"rows": meta["rows"], "dims": meta["dims"], "kind": meta["kind"], "sources": meta["sources"]["rows"]}


def prepare_train(ctx: Context) -> dict:
    """verl's multimodal parquet (geo3k layout) from the training manifest."""
    info = json.loads(ctx.cim("prepare-train"))
    expect(info.get("train_rows") == len(_jsonl(ctx.out / "data/train.jsonl")),
           f"prepare-train wrote {info.get('train_rows')} rows")
    expect(info.get("in_gallery") == info.get("train_rows"), "training images missing from the gallery")
    return {k: info[k] for k in ("train_rows", "val_rows", "in_gallery") if k in info}


def verl_config(ctx: Context) -> dict:
    """`cim train --backend verl --dry-run`'s overrides composed with verl's ppo_trainer.yaml, validated."""
    from e2e.full_path.rollout import compose, verl_overrides

    port = ctx.state["port"]
    out = ctx.cim("train", "--backend", "verl", "--dry-run", f"train.service.port={port}")
    overrides = verl_overrides(out)
    cfg = compose(overrides)
    expect(cfg.reward.custom_reward_function.path == "pkg://cim.train.verl.reward", "reward function not ours")
    expect(cfg.reward.custom_reward_function.reward_kwargs.service_url == f"http://127.0.0.1:{port}",
           "the reward does not go to the service")
    ctx.state["verl_cfg"] = cfg
    # the params snapshot `cim train` writes before launching (the reward kwargs' `params`)
    snapshot = Path(cfg.reward.custom_reward_function.reward_kwargs.params)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ctx.out / "params.yaml", snapshot)
    (ctx.out / "logs" / "verl_overrides.txt").write_text("\n".join(overrides) + "\n")
    return {"overrides": len(overrides), "model": cfg.actor_rollout_ref.model.path,
            "adv_estimator": cfg.algorithm.adv_estimator, "rollout_n": cfg.actor_rollout_ref.rollout.n,
            "train_batch_size": cfg.data.train_batch_size}


def verl_data(ctx: Context) -> dict:
    """verl's RLHFDataset + collate_fn on the parquet with the policy's processor."""
    from e2e.full_path.rollout import dataset_batch

    cfg = ctx.state["verl_cfg"]
    ds, rows, batch, processor = dataset_batch(cfg, ctx.out / "cache" / "rl_dataset")
    train_ids = [r["id"] for r in _jsonl(ctx.out / "data/train.jsonl")]
    expect(len(ds) == len(train_ids), f"RLHFDataset kept {len(ds)} of {len(train_ids)} rows (overlong filter?)")
    expect(type(processor).__name__ == "Qwen2_5_VLProcessor", f"processor is {type(processor).__name__}")
    content = rows[0]["raw_prompt"][0]["content"]
    expect(isinstance(content, list) and content[0].get("type") == "image",
           f"the prompt does not start with the image: {str(content)[:120]}")
    ids = [e["image_id"] for e in batch.non_tensor_batch["extra_info"]]
    expect(ids == [r["reward_model"]["ground_truth"] for r in rows] and set(ids) <= set(train_ids),
           "image ids do not reach the batch")
    ctx.state["batch"] = batch
    return {"dataset_rows": len(ds), "batch": len(batch), "image_ids": ids,
            "non_tensor_keys": sorted(batch.non_tensor_batch)}


def serve(ctx: Context) -> dict:
    """`cim serve` in the background, answering /health."""
    from cim.service.client import RewardClient

    port = ctx.state["port"]
    log = open(ctx.log_path(), "a", encoding="utf-8")
    proc = subprocess.Popen(cim_command() + ["serve", "--port", str(port)], cwd=ctx.out, stdout=log,
                            stderr=subprocess.STDOUT, env=os.environ.copy())

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    ctx.cleanups.append(stop)
    ctx.state["stop_service"] = stop
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    with RewardClient(url, timeout_s=5.0, retries=0) as client:
        while True:
            if proc.poll() is not None:
                raise StepFailed(f"`cim serve` exited {proc.returncode} while starting (log: {ctx.log_path()})")
            try:
                health = client.health()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise StepFailed(f"`cim serve` did not answer /health within 300 s (log: {ctx.log_path()})")
                time.sleep(0.5)
    ctx.state["service_url"] = url
    expect(health.get("corpus_size") == len(_jsonl(ctx.out / "data/corpus.jsonl")), f"health: {health}")
    return {"url": url, "corpus_size": health.get("corpus_size"), "text_encoder": health.get("text_encoder"),
            "index_kind": health.get("index_kind")}


def rollout(ctx: Context) -> dict:
    """verl's agent loop: rollouts by HF generate of the tiny policy, each scored through `cim serve` by
    verl's reward loop; rewards checked against the service itself."""
    import ray
    import torch

    from cim.service.client import RewardClient
    from e2e.full_path.rollout import rollouts

    cfg = ctx.state["verl_cfg"]
    env = {k: os.environ[k] for k in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
                                      "HF_DATASETS_CACHE") if k in os.environ}
    temp = Path("/tmp") / f"ray-cim-smoke-{os.getpid()}"     # short: Ray's socket paths must stay < 108 chars
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env},
             _temp_dir=str(temp))
    ctx.cleanups.append(lambda: (ray.shutdown(), shutil.rmtree(temp, ignore_errors=True)))
    batch, facts = rollouts(cfg, ctx.state["batch"])
    t = batch.batch
    n = int(cfg.actor_rollout_ref.rollout.n) * len(ctx.state["batch"])
    expect(len(batch) == n, f"{len(batch)} rollouts, expected {n}")
    expect("rm_scores" in t.keys(), "no rm_scores: the reward loop did not score the rollouts")
    expect(facts["server_requests"] == n, f"the rollout server answered {facts['server_requests']} of {n} requests")
    expect(int(t["response_mask"].sum(-1).min()) >= 1, "a rollout has no response token")
    tok = ctx.state.get("tokenizer")
    if tok is None:
        from verl.utils import hf_tokenizer

        tok = hf_tokenizer(cfg.actor_rollout_ref.model.path)
    lengths = t["attention_mask"][:, t["prompts"].shape[1]:].sum(-1)
    captions = [tok.decode(r[:int(n_)].tolist(), skip_special_tokens=True) for r, n_ in zip(t["responses"], lengths)]
    ids = [e["image_id"] for e in batch.non_tensor_batch["extra_info"]]
    scores = t["rm_scores"].sum(-1).tolist()
    with RewardClient(ctx.state["service_url"], retries=1) as client:
        direct = client.score([{"caption": c, "image_id": i} for c, i in zip(captions, ids)])
    for s, d, c in zip(scores, direct, captions):
        want = d["score"] if d["score"] is not None else 0.0      # an empty caption gets the fallback score (0)
        expect(math.isclose(s, want, abs_tol=1e-4), f"reward {s} via verl's reward loop != {want} from the service "
                                                    f"for caption {c!r}")
    expect(all(k in batch.non_tensor_batch for k in ("grc", "qir", "failed")), "reward extras missing")
    expect(float(torch.tensor(list(batch.non_tensor_batch["reward_system_failed"])).sum()) == 0,
           "the reward system failed for some rollouts")
    ctx.state["rollouts"] = batch
    (ctx.out / "cache").mkdir(parents=True, exist_ok=True)
    batch.save_to_disk(str(ctx.out / "cache" / "rollouts.pt"))      # the trainer's batch, for inspection
    ctx.state["stop_service"]()
    (ctx.out / "logs" / "rollouts.jsonl").write_text("".join(
        json.dumps({"image_id": i, "caption": c, "reward": s}) + "\n" for i, c, s in zip(ids, captions, scores)))
    return {"rollouts": len(batch), "reward_mean": sum(scores) / len(scores), "captions": captions[:3],
            "grc_mean": float(sum(batch.non_tensor_batch["grc"]) / len(batch)), **facts}


def grpo_update(ctx: Context) -> dict:
    """One GRPO step: verl's compute_advantage, policy loss, KL, the actor's optimizer."""
    from e2e.full_path.grpo import grpo_step, load_policy

    cfg = ctx.state["verl_cfg"]
    model = load_policy(cfg.actor_rollout_ref.model.path)
    metrics = grpo_step(cfg, model, ctx.state["rollouts"])
    expect(all(math.isfinite(metrics[k]) for k in ("loss", "pg_loss", "grad_norm")), f"non-finite loss: {metrics}")
    expect(metrics["grad_norm"] > 0 and metrics["tensors_changed"] > 0, "the update changed no weight")
    expect(metrics["optimizer"] == cfg.actor_rollout_ref.actor.optim.optimizer,
           f"verl built {metrics['optimizer']}, the launcher asked for {cfg.actor_rollout_ref.actor.optim.optimizer}")
    gap = metrics["max_rollout_vs_actor_logprob_gap"]
    expect(gap is not None and gap < 1e-4, f"rollout log-probs and the actor's recomputation differ by {gap} "
                                           "(position ids or image features are misaligned)")
    ctx.state["model"] = model
    return metrics


def checkpoint(ctx: Context) -> dict:
    """verl's FSDP checkpoint layout -> `python -m verl.model_merger merge --backend fsdp` -> an HF folder."""
    import torch
    from verl.utils import hf_processor

    cfg = ctx.state["verl_cfg"]
    from e2e.full_path.grpo import save_actor_checkpoint

    actor = Path(cfg.trainer.default_local_dir) / "global_step_1" / "actor"
    save_actor_checkpoint(ctx.state["model"], hf_processor(cfg.actor_rollout_ref.model.path), actor)
    target = ctx.out / "checkpoints" / "hf" / "global_step_1"
    cmd = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(actor),
           "--target_dir", str(target)]
    with open(ctx.log_path(), "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, cwd=ctx.out, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy())
    expect(rc == 0, f"verl.model_merger exited {rc} (log: {ctx.log_path()})")
    files = sorted(p.name for p in target.iterdir())
    from e2e.full_path.grpo import load_policy

    merged = load_policy(str(target)).state_dict()            # as a consumer loads it (key mapping included)
    state = ctx.state["model"].state_dict()
    expect(set(merged) == set(state), f"merged checkpoint tensors differ: {sorted(set(state) ^ set(merged))[:3]}")
    worst = max(float((merged[k].float() - state[k].to(torch.bfloat16).float()).abs().max()) for k in state)
    expect(worst == 0.0, f"merged weights differ from the updated policy by {worst} (after bf16 rounding)")
    config = json.loads((target / "config.json").read_text())
    ctx.state["trained"] = str(target)
    return {"actor_dir": str(actor.relative_to(ctx.out)), "hf_dir": str(target.relative_to(ctx.out)), "files": files,
            "dtype": config.get("dtype") or config.get("torch_dtype"), "tensors": len(merged)}


def _caption(ctx: Context, name: str, model: str) -> dict:
    out = Path("reports/captions") / name / "captions.jsonl"
    ctx.cim("caption", "--captioner", "hf", "--model", model, "--benchmark", "full-tiny", "--out", str(out))
    rows = _jsonl(ctx.out / out)
    bench = json.loads((ctx.out / "data/benchmarks/full-tiny/test_full_tiny_gt.json").read_text())
    expect(sorted(r["image_id"] for r in rows) == sorted(bench), f"captions for {len(rows)} of {len(bench)} images")
    errors = [r for r in rows if r.get("error")]
    expect(not errors, f"{len(errors)} captions failed: {errors[0]['error'] if errors else ''}")
    empty = [r["image_id"] for r in rows if not (r["caption"] or "").strip()]
    meta = json.loads((ctx.out / out).with_name("captions.meta.json").read_text())
    return {"captions": str(out), "images": len(rows), "empty": len(empty), "example": rows[0]["caption"][:80],
            "dtype": meta["describe"].get("dtype"), "model": meta["describe"].get("model")}


def caption_base(ctx: Context) -> dict:
    """`cim caption --captioner hf` with the untrained policy."""
    return _caption(ctx, "base", "models/policy")


def caption_trained(ctx: Context) -> dict:
    """`cim caption --captioner hf` from the merged checkpoint folder."""
    return _caption(ctx, "cim", str(Path(ctx.state.get("trained") or "checkpoints/hf/global_step_1")
                                    .resolve().relative_to(ctx.out.resolve())))


def evaluate(ctx: Context) -> dict:
    """`cim evaluate`: CAPTURE (FACTUAL), fine-grained, Relations QA (LM judge), BLEU, METEOR, CIM."""
    ctx.cim("evaluate", "--benchmark", "full-tiny", "--captions", "reports/captions/cim/captions.jsonl",
            "--method", "cim", "--out", "reports/eval")
    res = json.loads((ctx.out / "reports/eval/full-tiny/cim/results.json").read_text())
    expect(not res.get("errors"), f"metrics failed: {res.get('errors')}")
    metrics, counts = res.get("metrics", {}), res.get("counts", {})
    missing = [m for m in ALWAYS if not isinstance(metrics.get(m), (int, float))]
    expect(not missing, f"results.json lacks {missing}")
    fg = counts.get("fine_grained", {})
    samples = counts.get("coverage", {}).get("samples")
    expect(samples and fg.get("scored", 0) + fg.get("skipped_no_attributes", 0) == samples,
           f"fine-grained counts do not cover the {samples} samples: {fg}")
    expect(all(isinstance(metrics.get(m), (int, float)) == (fg["scored"] > 0) for m in FINE_GRAINED),
           f"fine-grained values do not match its counts: {fg}, {[metrics.get(m) for m in FINE_GRAINED]}")
    qa = counts.get("relations_qa", {})
    expect(qa.get("scored") == ctx.state["counts"]["questions"], f"the judge did not answer every question: {qa}")
    labels = json.dumps(res.get("labels", {}))
    expect("factual:" in labels and "lm:" in labels, f"not the FACTUAL parser and the LM judge: {labels}")
    return {"metrics": {m: metrics.get(m) for m in ALWAYS + FINE_GRAINED}, "labels": res.get("labels", {}),
            "fine_grained": fg, "relations_qa": {k: qa.get(k) for k in ("scored", "yes", "no", "unknown", "unparseable")}}


def compare(ctx: Context) -> dict:
    """`cim compare` of the trained policy against the untrained one."""
    ctx.cim("compare", "--captions", "base=reports/captions/base/captions.jsonl", "--captions",
            "cim=reports/captions/cim/captions.jsonl", "--baseline", "base", "--benchmark", "full-tiny",
            "--out", "reports/results")
    table = json.loads((ctx.out / "reports/results/captioners.json").read_text())
    rows = {r["captioner"]: r for r in table["rows"]}
    expect(set(rows) == {"base", "cim"}, f"rows {sorted(rows)}")
    missing = [m for m in ALWAYS if m not in rows["cim"] or f"delta_{m}" not in rows["cim"]]
    expect(not missing, f"the table lacks {missing}")
    expect(all(rows["base"][f"delta_{m}"] == 0 for m in ALWAYS), "baseline deltas are not 0")
    cim_row = rows["cim"]
    expect(all(math.isclose(cim_row[f"delta_{m}"], cim_row[m] - rows["base"][m], abs_tol=1e-9) for m in ALWAYS),
           "deltas are not row minus baseline")
    expect(all(cim_row.get(f"{m}_ci95") and cim_row.get(f"delta_{m}_ci95") for m in ALWAYS),
           "the table lacks the 95% intervals")
    expect((ctx.out / "reports/results/captioners.md").is_file() and (ctx.out / "reports/results/captioners.png").is_file(),
           "captioners.md / .png not written")
    return {"rows": sorted(rows), "cim": {m: cim_row[m] for m in ALWAYS},
            "delta": {m: cim_row[f"delta_{m}"] for m in ALWAYS},
            "fine_grained_columns": [m for m in FINE_GRAINED if m in cim_row]}


# The chain, in order: each Step(name, seam, fn) becomes one entry of summary.json's "steps" (name, status,
# seconds, outputs). A new leg (another training backend, say) is one more function and one more Step here, at
# the place its inputs exist; tests/test_smoke_full.py checks every step of this list passes, in this order.
STEPS = [
    Step("build", "tiny random models of the real architectures + SC-Captioner-format data", build),
    Step("manifest", "release files -> gallery + training manifest (cim manifest)", manifest),
    Step("index", "open_clip + MPNet + FAISS index (cim index)", index),
    Step("prepare-train", "training manifest -> verl parquet (cim prepare-train)", prepare_train),
    Step("verl-config", "cim train --dry-run overrides -> verl's ppo_trainer config", verl_config),
    Step("verl-data", "parquet -> RLHFDataset + collate_fn with the Qwen2.5-VL processor", verl_data),
    Step("serve", "reward service up (cim serve)", serve),
    Step("rollout", "agent loop rollouts (HF generate) scored via the reward loop -> cim serve", rollout),
    Step("grpo-update", "GRPO advantage + policy loss (verl core_algos), one optimizer step", grpo_update),
    Step("checkpoint", "verl FSDP checkpoint layout -> verl.model_merger -> HF folder", checkpoint),
    Step("caption-base", "untrained policy -> captions (cim caption --captioner hf)", caption_base),
    Step("caption-trained", "merged checkpoint -> captions (cim caption --captioner hf)", caption_trained),
    Step("evaluate", "captions -> CAPTURE/FACTUAL, fine-grained, Relations QA (LM), BLEU, METEOR, CIM", evaluate),
    Step("compare", "trained vs untrained table (cim compare)", compare),
    Step("trl-train", "cim train --backend trl (TRL GRPOTrainer, own cim serve) -> final/ -> cim caption", trl_train),
]
