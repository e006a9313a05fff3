"""verl 0.9.1 on GPU clusters: the multimodal parquet (:mod:`.data`), the launch command and its overrides
(:mod:`.launch`), the reward function verl calls (:mod:`.reward`, ``pkg://cim.train.verl.reward``) and its
per-step metrics (:mod:`.reward_metrics`), the overlong-prompt count (:mod:`.prompt_lengths`).
Importing this package imports none of them (verl and torch are heavy)."""
