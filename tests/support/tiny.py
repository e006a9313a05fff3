"""The tiny configuration the DVC-stage tests run the pipeline's commands with (tests/pipeline, tests/e2e)."""
TINY = ["world.n_corpus=120", "world.n_train=12", "world.n_bench=10", "world.image_size=64",
        "encoders.image.image_size=64", "index.shard_size=50", "train.val_size=2",
        "train.local.sft_steps=4", "train.local.sft_batch=4", "train.local.grpo_steps=2",
        "train.local.prompts_per_step=2", "train.grpo.group_size=2", "train.local.n_eval=4",
        "train.local.d_model=32", "train.local.n_layers=1", "train.local.n_heads=2",
        "train.local.max_new_tokens=8", "train.local.save_every=1", "train.local.eval_every=2",
        "pipeline.seeds=[0]", "pipeline.n_boot=50"]

PAPER_ROWS = ("cim", "cim-grc", "cim-qir")     # the paper's GRPO rows: what the end-to-end tests train


def params_with_rows(src, dst, rows):
    """The params file ``src`` written to ``dst`` with ``pipeline.variants`` cut to ``rows`` (in that order; the
    file's variants replace the schema's), so a test trains only these rows; returns ``dst``."""
    from pathlib import Path

    import yaml

    data = yaml.safe_load(Path(src).read_text())
    have = data["pipeline"]["variants"]
    data["pipeline"]["variants"] = {row: have[row] for row in rows}
    Path(dst).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return Path(dst)
