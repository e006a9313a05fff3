"""The captioner comparison as library calls (the DVC stages and the Prefect flow call these):

    variants(cfg)                                   -> {name: overrides}: the SFT start and the GRPO variants
    train_sft(cfg, out_dir)                         -> the SFT start's folder (shared by every variant)
    train_variant(cfg, name, sft_dir, out_dir)      -> the variant's folder (GRPO from the SFT start)
    caption(cfg, captioner, benchmark, out_path)    -> captions.jsonl (+ captions.meta.json beside it)
    compare(cfg, captions, benchmark, baseline, out_dir) -> the table: captioners.json / .md / .png

Modules: :mod:`~cim.pipeline.variants`, :mod:`~cim.pipeline.training`, :mod:`~cim.pipeline.captioning`,
:mod:`~cim.pipeline.compare` (metrics), :mod:`~cim.pipeline.table` (files); commands `cim caption`
(:mod:`~cim.pipeline.caption_command`) and `cim compare` (:mod:`~cim.pipeline.compare_command`).
"""
from cim.pipeline.variants import checkpoint_dir, variant_config, variants

__all__ = ["variants", "variant_config", "checkpoint_dir", "train_sft", "train_variant", "caption", "compare"]


def train_sft(cfg, out_dir, **kwargs):
    from cim.pipeline.training import train_sft as run

    return run(cfg, out_dir, **kwargs)


def train_variant(cfg, name, sft_dir, out_dir, **kwargs):
    from cim.pipeline.training import train_variant as run

    return run(cfg, name, sft_dir, out_dir, **kwargs)


def caption(cfg, captioner, benchmark, out_path, **kwargs):
    from cim.pipeline.captioning import caption as run

    return run(cfg, captioner, benchmark, out_path, **kwargs)


def compare(cfg, captions, benchmark, baseline, out_dir, **kwargs):
    from cim.pipeline.compare import compare as run

    return run(cfg, captions, benchmark, baseline, out_dir, **kwargs)
