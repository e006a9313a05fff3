"""``cim train --backend trl``: TRL's ``GRPOTrainer`` on one Hugging Face VLM with the CIM reward.

Modules: :mod:`~cim.train.trl.checks` (what TRL can train, before any weights load),
:mod:`~cim.train.trl.settings` (``train.grpo`` + ``train.trl`` -> ``GRPOConfig``), :mod:`~cim.train.trl.data`
(``cim prepare-train``'s parquet -> a prompt/image dataset), :mod:`~cim.train.trl.reward` (the reward function:
the reward service through :class:`cim.service.client.RewardClient`), :mod:`~cim.train.trl.mlflow_log` (MLflow:
step metrics, the final model) and :mod:`~cim.train.trl.run` (one run: service, MLflow run, resume, final/).
"""
