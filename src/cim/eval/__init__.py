"""Caption evaluation: the ``evaluate`` stage (``cim evaluate``, docs/evaluation.md).

- :func:`cim.eval.evaluate.evaluate` — the stage as a library call (``Evaluator``, ``record``, ``merge``);
- :mod:`.benchmarks` (formats), :mod:`.metrics`, :mod:`.parsers`, :mod:`.judges`, :mod:`.captioners` —
  each a registry of named, pluggable parts (docs/extending.md);
- :mod:`.capture`, :mod:`.fine_grained`, :mod:`.text_metrics`, :mod:`.accuracy_correlation`,
  :mod:`.world_truth` — the metrics' algorithms; :mod:`.results` — tables, headline numbers, MLflow.
"""
