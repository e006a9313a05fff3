"""The authors' released checkpoints as named captioners (``eval.captioner.name=kkk5/CIM-Qwen2.5-VL-7B``).

Each entry knows its base model (the training preset's model, ``configs/train/<preset>.yaml``), how it was
trained, and which rows of the benchmarks' ``paper:`` blocks it reproduces, so one command evaluates it and
prints the table beside the published numbers::

    cim evaluate --protocol official --captioner kkk5/CIM-Qwen2.5-VL-7B [--with-base]

Weights are never downloaded: they come from ``eval.captioner.model`` (a local folder) or the local Hugging
Face cache; absent, building the captioner raises :class:`~cim.errors.WeightsNotFound` naming how to get
them, before any benchmark is loaded. ``eval.captioner.engine`` runs them through transformers (``hf``) or
vLLM (``vllm``, the release's); ``eval.captioner.with_base`` captions with the base model too, as the
table's baseline row (the paper's ○ Base → ● Ours).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from cim.errors import ConfigError, WeightsNotFound
from cim.eval.captioners import CAPTIONERS, Captioner, Decoding, HFVLMCaptioner, VLLMCaptioner

__all__ = ["Release", "RELEASES", "ReleasedCaptioner", "weights_dir", "paper_key"]

# architectures that transformers' AutoModelForImageTextToText cannot load (InternVL's remote-code format)
REMOTE_CODE_ARCHITECTURES = ("InternVLChatModel",)


@dataclass(frozen=True)
class Release:
    name: str                 # hub id
    preset: str               # configs/train/<preset>.yaml: its model is the base
    training: str             # GRPO | SFT + GRPO
    paper_base: str           # key of the starting point's row in a benchmark's paper: block
    paper_row: str            # key of this checkpoint's row
    trust_remote_code: bool = False

    @property
    def base(self) -> str:
        from cim.presets import load_preset

        return load_preset(self.preset)["model"]


RELEASES: dict[str, Release] = {r.name: r for r in (
    Release("kkk5/CIM-Qwen2-VL-7B", "qwen2_vl_7b", "GRPO", "qwen2-vl-7b/base", "qwen2-vl-7b/cim"),
    Release("kkk5/CIM-Qwen2.5-VL-7B", "qwen2_5_vl_7b", "GRPO", "qwen2.5-vl-7b/base", "qwen2.5-vl-7b/cim"),
    Release("kkk5/CIM-LLaVA1.5-7B", "llava1_5_7b", "GRPO", "llava-1.5-7b/base", "llava-1.5-7b/cim"),
    Release("kkk5/CIM-InternVL2-8B", "internvl2_8b", "GRPO", "internvl2-8b/base", "internvl2-8b/cim", True),
    Release("kkk5/CIM-InternVL2.5-8B", "internvl2_5_8b", "GRPO", "internvl2.5-8b/base", "internvl2.5-8b/cim", True),
    Release("kkk5/CIM-InternVL3-8B", "internvl3_8b", "GRPO", "internvl3-8b/base", "internvl3-8b/cim", True),
    Release("kkk5/CIM-Qwen2-VL-7B-SFT", "qwen2_vl_7b", "SFT + GRPO", "qwen2-vl-7b/sft", "qwen2-vl-7b/sft+cim"),
    Release("kkk5/CIM-LLaVA1.5-7B-SFT", "llava1_5_7b", "SFT + GRPO", "llava-1.5-7b/sft", "llava-1.5-7b/sft+cim"),
)}


def weights_dir(repo: str, folder: str = "") -> Path:
    """The local folder holding ``repo``: ``folder`` when given, else its snapshot in the local hub cache."""
    from cim.encoders.weights import hf_cached_snapshot

    if folder:
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise WeightsNotFound(f"eval.captioner.model={folder!r} holds no config.json: not a checkpoint of {repo}")
        return path
    found = hf_cached_snapshot(repo)
    if found is None:
        raise WeightsNotFound(
            f"weights of {repo} not found: they are not on this machine (local files only). On a machine with "
            f"internet: `huggingface-cli download {repo}` (or `hf download {repo} --local-dir DIR`), then copy the "
            f"hub cache here (HF_HOME) or pass eval.captioner.model=DIR")
    return found


def _architectures(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / "config.json").read_text()).get("architectures") or [])
    except (OSError, ValueError):
        return []


def paper_key(describe: dict) -> list[str]:
    """The paper rows a result's captioner corresponds to (from its ``describe()``)."""
    return list(describe.get("paper_rows") or []) if isinstance(describe, dict) else []


class ReleasedCaptioner(Captioner):
    """A released checkpoint (and, with ``with_base``, its base model) through transformers or vLLM."""

    def __init__(self, c, release: Release):
        self.release, self.engine = release, c.engine
        self.decoding = Decoding(max_new_tokens=c.max_new_tokens)
        self.weights = weights_dir(release.name, c.model)
        self.base_weights = weights_dir(release.base) if c.with_base else None
        self._options = {"device": c.device, "dtype": c.dtype, "batch_size": c.batch_size}
        self.baseline = f"{self._short(release.base)} (base)" if c.with_base else ""

    @property
    def name(self) -> str:
        return self.release.name

    @staticmethod
    def _short(repo: str) -> str:
        return repo.rsplit("/", 1)[-1]

    def _engine(self, folder: Path, repo: str) -> Captioner:
        if self.engine == "hf":
            arch = _architectures(folder)
            if any(a in REMOTE_CODE_ARCHITECTURES for a in arch):
                raise ConfigError(f"{repo} is in InternVL's remote-code format ({', '.join(arch)}), which "
                                  "transformers' image-text-to-text models cannot load: set eval.captioner.engine=vllm")
            return HFVLMCaptioner(str(folder), decoding=self.decoding, **self._options)
        return VLLMCaptioner(str(folder), decoding=self.decoding, trust_remote_code=self.release.trust_remote_code)

    def describe(self, base: bool = False) -> dict:
        r = self.release
        return {"name": r.base if base else r.name, "kind": "released" if not base else "released-base",
                "release": r.name, "base": r.base, "training": r.training, "engine": self.engine,
                "weights": str(self.base_weights if base else self.weights), "decoding": asdict(self.decoding),
                "paper_rows": [r.paper_base] if base else [r.paper_base, r.paper_row]}

    def caption(self, images, prompt: str) -> list[str]:
        return self._engine(self.weights, self.release.name).caption(images, prompt)

    def methods(self, bench, prompt: str, bench_dir: Path, method: str = "", batch_size: int = 8):
        from cim.eval.captioners import generate_captions
        from cim.eval.results import method_dir

        todo = [(f"{self._short(self.release.name)} (released)" if not method else method, False)]
        if self.base_weights is not None:
            todo.insert(0, (self.baseline, True))
        out = []
        for name, base in todo:
            engine = self._engine(self.base_weights if base else self.weights,
                                  self.release.base if base else self.release.name)
            path = method_dir(bench_dir, name) / "captions.jsonl"
            rows, counts = generate_captions(engine, bench.samples, prompt, path, batch_size=max(1, batch_size))
            out.append((name, {r["image_id"]: r["caption"] for r in rows},
                        {"source": self.release.name, "file": str(path), "prompt": prompt,
                         "describe": self.describe(base), "counts": counts}))
            del engine                      # one model in memory at a time
        return out


for _release in RELEASES.values():      # one class, one name per release (CAPTIONERS.build passes release=)
    CAPTIONERS.register(_release.name, release=_release)(ReleasedCaptioner)


def plan(c) -> Optional[dict]:
    """What ``eval.captioner`` names, resolved without loading a model (None for non-released captioners):
    the release, its base, the engine and where the weights are (or the error saying how to get them)."""
    release = RELEASES.get(c.name)
    if release is None:
        return None
    out = {"release": release.name, "base": release.base, "training": release.training, "engine": c.engine,
           "with_base": c.with_base, "max_new_tokens": c.max_new_tokens,
           "paper_rows": [release.paper_base, release.paper_row]}
    for key, repo, folder in (("weights", release.name, c.model), ("base_weights", release.base, "")):
        if key == "base_weights" and not c.with_base:
            continue
        try:
            out[key] = str(weights_dir(repo, folder))
        except WeightsNotFound as exc:
            out[key], out[f"{key}_missing"] = None, str(exc)
    return out
