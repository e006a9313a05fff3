"""`cim train --backend local`: GRPO with the CIM reward on CPU, with verl's own maths.

The captioner: frozen image features (the index's source-image embeddings, i.e. the configured image
encoder's features, precomputed at indexing time) -> a projector to ``n_prefix`` prefix embeddings -> a small
causal language model. SFT warm-up, then GRPO; MLflow per step; checkpoints and resume (docs/training.md §6).

Modules: :mod:`~cim.train.local.tokenizers` (word vocabulary / HF tokenizer), :mod:`~cim.train.local.model`
(the captioner), :mod:`~cim.train.local.examples` (SFT pairs, training and held-out features),
:mod:`~cim.train.local.trainer` (SFT, GRPO, evaluation), :mod:`~cim.train.local.checkpoints`,
:mod:`~cim.train.local.history` (metrics kept in checkpoints, sent to MLflow), :mod:`~cim.train.local.curves`
and :mod:`~cim.train.local.run` (the command: MLflow run, resume, reports).
"""
from cim.train.local.run import run_local
from cim.train.local.trainer import LocalTrainer

__all__ = ["run_local", "LocalTrainer"]
