"""How many training rows verl's ``data.filter_overlong_prompts`` will drop, counted before verl starts.

verl 0.9.1 silently removes every row whose prompt (chat template + image tokens) is longer than
``data.max_prompt_length``. The count here runs verl's own filter (``RLHFDataset``) with the tokenizer and
processor verl will load (``verl.utils.hf_tokenizer`` / ``hf_processor`` on the policy model's folder), so
it is the number verl drops, not an estimate. The model must be on this machine (a local folder or the local
hub cache); when it is not, the result says the rows cannot be counted and why.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

__all__ = ["local_model_dir", "count_overlong"]


def local_model_dir(model: str) -> Optional[Path]:
    """A folder holding ``model``: the path itself, or its snapshot in the local hub cache (no download)."""
    from cim.encoders.weights import hf_cached_snapshot

    path = Path(model).expanduser()
    return path if path.is_dir() else hf_cached_snapshot(model)


def _image_ids(parquet: Path) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(parquet, columns=["extra_info"])
    return [str((row or {}).get("image_id")) for row in table.column("extra_info").to_pylist()]


def count_overlong(parquet: str | Path, model: str, max_prompt_length: int, *, trust_remote_code: bool = False,
                   image_key: str = "images", prompt_key: str = "prompt") -> dict:
    """``{"counted", "rows", "kept", "dropped", "dropped_ids" (first 20), "max_prompt_length", "model",
    "processor"}`` for one parquet file; ``counted`` false (with ``reason``) when the model's tokenizer is
    not on this machine or verl cannot be imported."""
    parquet = Path(parquet)
    out: dict = {"counted": False, "parquet": str(parquet), "model": model, "max_prompt_length": int(max_prompt_length)}
    folder = local_model_dir(model)
    if folder is None:
        out["reason"] = (f"the model {model!r} is not on this machine (local folder or hub cache), so its "
                         "processor cannot count prompt tokens; verl will filter the rows itself")
        return out
    try:
        from omegaconf import OmegaConf
        from verl.utils import hf_processor, hf_tokenizer
        from verl.utils.dataset.rl_dataset import RLHFDataset
    except ImportError as exc:
        out["reason"] = f"verl cannot be imported here ({exc})"
        return out
    tokenizer = hf_tokenizer(str(folder), trust_remote_code=trust_remote_code)
    processor = hf_processor(str(folder), trust_remote_code=trust_remote_code, use_fast=True)
    ids = _image_ids(parquet)
    with tempfile.TemporaryDirectory(prefix="cim-prompt-lengths-") as cache:
        config = OmegaConf.create({"max_prompt_length": int(max_prompt_length), "filter_overlong_prompts": True,
                                   "image_key": image_key, "prompt_key": prompt_key, "truncation": "error",
                                   "filter_overlong_prompts_workers": 1, "cache_dir": cache})
        dataset = RLHFDataset([str(parquet)], tokenizer, config, processor)
        kept = {str((r or {}).get("image_id")) for r in dataset.dataframe["extra_info"]}
    dropped = [i for i in ids if i not in kept]
    out.update(counted=True, rows=len(ids), kept=len(ids) - len(dropped), dropped=len(dropped),
               dropped_ids=dropped[:20], processor=type(processor).__name__ if processor is not None else None)
    if processor is None:
        out["note"] = "no processor in the model folder: verl counts text tokens only (no image tokens)"
    return out
