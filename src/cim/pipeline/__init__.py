"""The captioners' comparison: which rows and runs there are (:mod:`.variants`: the SFT start and the GRPO
variants, each with every seed of ``pipeline.seeds``), the steps that make them, as data (:mod:`.plan`: what
every runner runs), what a captioner name means (:mod:`.captioning`), and the table with seeds and intervals
(:mod:`.table`). The stages that run them: :mod:`cim.stages.train`
(``train_sft``, ``train_variant``), :mod:`cim.stages.caption`, :mod:`cim.stages.compare`."""
