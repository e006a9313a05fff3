"""What ``--backend trl`` can train, checked before any weights load: each failure is one line naming the fix
(:class:`cim.errors.ConfigError` / :class:`cim.errors.InputError`, exit 2)."""
from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

from cim.errors import ConfigError, InputError

TRL_VERSION = "1.16.0"
# config.json model_type -> family: the VLMs whose processor and chat template TRL's GRPOTrainer takes images with
MODEL_TYPES = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL", "llava": "LLaVA"}
# the verl presets (configs/train/) of those families; InternVL 2/2.5 are remote code, InternVL3-hf untested
PRESETS = ("qwen2_5_vl_7b", "qwen2_vl_7b", "llava1_5_7b")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def require_trl() -> str:
    """TRL's installed version; :class:`ConfigError` when it is not installed."""
    if find_spec("trl") is None:
        raise ConfigError(f"train.backend=trl needs TRL: pip install trl=={TRL_VERSION} "
                          "(pinned in requirements.lock), or use --backend verl / local")
    from importlib.metadata import version

    return version("trl")


def check_preset(name: str) -> None:
    from cim.presets import load_preset

    preset = load_preset(name)   # an unknown name: PresetError (one line, exit 2)
    if name not in PRESETS:
        raise ConfigError(f"train.trl.preset={name}: TRL cannot train {preset['model']} here (only the "
                          f"{', '.join(sorted(set(MODEL_TYPES.values())))} presets: {', '.join(PRESETS)}); "
                          "use --backend verl for it, or train.trl.model_path=<a folder of a supported VLM>")


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    for name in ("processor_config.json", "tokenizer_config.json"):
        f = folder / name
        if f.is_file() and json.loads(f.read_text(encoding="utf-8")).get("chat_template"):
            return True
    return False


def check_model_folder(model: str) -> None:
    """A local model folder: a VLM of :data:`MODEL_TYPES` with its processor and chat template. A hub name
    (no such folder, no path separator at its start) is left to the loader (local cache, offline)."""
    folder = Path(model)
    if not folder.exists():
        if model.startswith(("/", ".", "~")) or model.count("/") > 1:
            raise InputError(f"train.trl.model_path={model}: no such folder; give a model folder or a hub name")
        return
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(f"{folder}: no config.json; train.trl.model_path must be a Hugging Face model folder")
    kind = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
    if kind not in MODEL_TYPES:
        raise InputError(f"{folder}: model_type {kind or '(none)'!r} is not a VLM TRL's GRPOTrainer trains here "
                         f"({', '.join(sorted(MODEL_TYPES))}); use --backend verl or another model folder")
    if not any((folder / name).is_file() for name in _PROCESSOR_FILES):
        raise InputError(f"{folder}: no image processor (preprocessor_config.json); save the model's "
                         "processor into the folder (AutoProcessor.from_pretrained(base).save_pretrained(folder))")
    if not _has_chat_template(folder):
        raise InputError(f"{folder}: no chat template (chat_template.jinja, or chat_template in "
                         "tokenizer_config.json); copy the base model's chat_template.jinja into the folder")


def resolve_model(cfg) -> str:
    """The policy model to train (``train.trl.model_path``, else the preset's model), checked."""
    t = cfg.train.trl
    if not t.model_path:
        check_preset(t.preset)
        from cim.presets import load_preset

        model = load_preset(t.preset)["model"]
    else:
        model = t.model_path
    check_model_folder(model)
    return model


def check_settings(cfg) -> None:
    g, t = cfg.train.grpo, cfg.train.trl
    if g.kl_type not in ("low_var_kl", "k3"):
        raise ConfigError(f"train.grpo.kl_type={g.kl_type}: TRL's GRPOTrainer has the k3 estimator only "
                          "(verl's low_var_kl, unclamped); set train.grpo.kl_type=low_var_kl or use --backend verl")
    if g.group_size < 2:
        raise ConfigError(f"train.grpo.group_size={g.group_size}: GRPO needs at least 2 captions per image")
    if t.use_vllm and find_spec("vllm") is None:
        raise ConfigError("train.trl.use_vllm=true needs vLLM: pip install 'trl[vllm]' on the GPU machine, "
                          "or set train.trl.use_vllm=false")
    if t.lora and find_spec("peft") is None:
        raise ConfigError("train.trl.lora=true needs peft: pip install peft (pinned in requirements.lock)")
