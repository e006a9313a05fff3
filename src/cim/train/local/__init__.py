"""`cim train --backend local`: GRPO with the CIM reward on CPU, with verl's own maths.

The captioner: frozen image features (the index's source-image embeddings, i.e. the configured image
encoder's features, precomputed at indexing time) -> a projector to ``n_prefix`` prefix embeddings -> a small
causal language model. SFT warm-up, then GRPO; MLflow per step; checkpoints and resume (docs/training.md §6).

Modules: :mod:`~cim.train.local.tokenizers` (word vocabulary / HF tokenizer), :mod:`~cim.train.local.model`
(the captioner), :mod:`~cim.train.local.examples` (SFT pairs, training and held-out features),
:mod:`~cim.train.local.trainer` (SFT, GRPO, evaluation), :mod:`~cim.train.local.checkpoints`,
:mod:`~cim.train.local.history` (metrics kept in checkpoints, sent to MLflow), :mod:`~cim.train.local.curves`,
:mod:`~cim.train.local.run` (one training run: MLflow run, resume, reports), :mod:`~cim.train.local.inference`
(a trained checkpoint, greedy) and :mod:`~cim.train.local.captioner` (it as the registered captioner ``local``).
Importing this package imports none of them.
"""
