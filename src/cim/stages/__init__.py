"""One function per stage: what ``cim <command>``, the DVC stages (which run the commands) and the Prefect
flows all call, so the three runners run the same code and write the same bytes.

A stage function takes the config (:func:`cim.config.load_config`) and owns everything that makes its result
reproducible and recorded: it checks the names of the pluggable parts it uses before any work
(:func:`cim.config.check_names`), runs under :func:`cim.determinism.deterministic` where it computes, opens
its MLflow run (``track=True``; a child of the pipeline execution's parent run, :mod:`cim.tracking`) before
the work so the run's duration covers it, writes its outputs atomically, and returns what it made. It never
parses arguments or prints a table: the command does that.

=================  ==========================================================================================
stage              function
=================  ==========================================================================================
prepare            :func:`cim.stages.prepare.prepare` — the demo world
manifest           :func:`cim.stages.manifest.manifest` — a corpus manifest from a dataset release
index              :func:`cim.stages.index.index` — resumable shards, the search index, source embeddings
score              :func:`cim.stages.score.score_file` — captions in, rewards out
verify             :func:`cim.stages.verify.verify` — does the reward order captions of known quality?
audit              :func:`cim.stages.audit.audit` — does it carry signal on this corpus? (no labels)
evaluate           :func:`cim.stages.evaluate.evaluate` — benchmarks x captions -> metrics, tables
serve              :func:`cim.stages.serve.serve` — the reward service
prepare-train      :func:`cim.stages.prepare_train.prepare_train` — verl's parquet
train              :func:`cim.stages.train.train`, :func:`~cim.stages.train.train_sft`,
                   :func:`~cim.stages.train.train_variant` — GRPO (verl or the local backend)
caption            :func:`cim.stages.caption.caption` — a captioner over a benchmark
compare            :func:`cim.stages.compare.compare` — the captioners' table
publish            :func:`cim.stages.publish.publish` — the table into MLflow, once per execution
ablate             :func:`cim.stages.ablate.ablate` — the paper's ablations of the reward
=================  ==========================================================================================

Import a stage from its module: ``from cim.stages.index import index``. Importing this package imports none,
and no stage imports another (a shared body lives in a lower layer; the runners chain stages: the
comparison's steps are :func:`cim.pipeline.plan.plan`).
"""
