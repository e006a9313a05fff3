"""The tiny configuration the DVC-stage tests run the pipeline's commands with (tests/pipeline, tests/e2e)."""
TINY = ["world.n_corpus=120", "world.n_train=12", "world.n_bench=10", "world.image_size=64",
        "encoders.image.image_size=64", "index.shard_size=50", "train.val_size=2",
        "train.local.sft_steps=4", "train.local.sft_batch=4", "train.local.grpo_steps=2",
        "train.local.prompts_per_step=2", "train.grpo.group_size=2", "train.local.n_eval=4",
        "train.local.d_model=32", "train.local.n_layers=1", "train.local.n_heads=2",
        "train.local.max_new_tokens=8", "train.local.save_every=1", "train.local.eval_every=2",
        "pipeline.seeds=[0]", "pipeline.n_boot=50"]
