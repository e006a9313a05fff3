"""``cim prepare-train``'s parquet (one data preparation for verl and TRL) -> the dataset TRL's GRPOTrainer
takes for a VLM: a conversational ``prompt`` (the user turn without verl's ``<image>`` marker: TRL puts the
image block before the text), the ``image`` and ``image_id`` (the reward function receives both)."""
from __future__ import annotations

from pathlib import Path

from cim.errors import InputError

IMAGE_TOKEN = "<image>"


def load_dataset(path: str | Path):
    import pyarrow.parquet as pq
    from datasets import Dataset, Image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is missing; run `cim prepare-train` first")
    rows = pq.read_table(path).to_pylist()
    if not rows:
        raise InputError(f"{path}: no training rows")
    prompts, images, ids = [], [], []
    for r in rows:
        turn = r["prompt"][-1]
        prompts.append([{"role": "user", "content": turn["content"].replace(IMAGE_TOKEN, "").strip()}])
        images.append({"bytes": r["images"][0]["bytes"], "path": None})
        ids.append(str((r.get("extra_info") or {}).get("image_id") or r["reward_model"]["ground_truth"]))
    ds = Dataset.from_dict({"prompt": prompts, "image": images, "image_id": ids})
    return ds.cast_column("image", Image())
