"""One structured schema for params.yaml.

Every stage reads its own section. Overrides use ``key=value`` (dotted paths), exactly the syntax of
``dvc exp run -S``. An unknown key or a value of the wrong type fails with the full key path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A params file or override that does not fit the schema."""


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
    # alt-text-like and dense captions, which is what gives GRC its signal (see notes in docs/)
    corpus_detail_mix: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.4])


@dataclass
class TextEncoderConfig:
    name: str = "sentence-transformers"   # registry key
    model: str = "all-MiniLM-L6-v2"       # embedded package name, hub name (local cache only) or a path
    batch_size: int = 128
    max_seq_length: Optional[int] = None
    device: str = "auto"                  # auto | cpu | cuda | cuda:N


@dataclass
class ImageEncoderConfig:
    name: str = "efficientnet-lite"       # registry key: efficientnet-lite | open_clip
    model: str = "efficientnet-lite0"     # open_clip: an architecture such as ViT-H-14
    pretrained: str = "embedded"          # open_clip: a pinned tag (laion2b_s32b_b79k) or a checkpoint path
    image_size: int = 224
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
    center_images: bool = False  # subtract the corpus mean image embedding before normalising
    device: str = "auto"         # where search runs: auto | cpu | cuda


@dataclass
class RewardConfig:
    """The CIM reward, paper Eqs. 1-4."""

    top_k: int = 5
    decay: float = 0.5           # lambda(r) = decay ** (r - 1)
    beta: float = 1.0
    mode: str = "both"           # both | grc | qir   (the Fig. 4 ablation)
    # Leave the source image's own corpus entry out of its retrieval. Default true: otherwise a caption
    # that recalls the training image's corpus text gets cos = 1 at rank 1, which rewards memorising the
    # corpus rather than describing the image. Set false for the paper's literal setting.
    exclude_source: bool = True
    batch_size: int = 512


@dataclass
class VerifyConfig:
    """Does the reward track caption quality? (stage ``verify``)"""

    out_dir: str = "reports/verify"


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_dir: str = "mlruns/artifacts"
    experiment: str = "cim"


@dataclass
class Config:
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


_CHOICES = {
    "index.kind": ("exact", "ivf", "hnsw"),
    "reward.mode": ("both", "grc", "qir"),
}


def _check_choices(cfg: DictConfig) -> None:
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    if cfg.reward.top_k < 1:
        raise ConfigError(f"reward.top_k must be >= 1, got {cfg.reward.top_k}")
    if not 0.0 < cfg.reward.decay <= 1.0:
        raise ConfigError(f"reward.decay must be in (0, 1], got {cfg.reward.decay}")


def load_config(path: str | Path | None = "params.yaml", overrides: Sequence[str] = ()) -> Config:
    """Load ``params.yaml`` (if it exists) over the defaults, then apply ``key=value`` overrides.

    Returns an omegaconf-backed object typed as :class:`Config` (attribute access, type-checked on write).
    """
    cfg = OmegaConf.structured(Config)
    try:
        if path is not None and Path(path).exists():
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:  # unknown key, wrong type: the message names the full key
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key}: {exc.msg if hasattr(exc, 'msg') else exc}" if key else str(exc)) from None
    _check_choices(cfg)
    return cfg  # type: ignore[return-value]


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
