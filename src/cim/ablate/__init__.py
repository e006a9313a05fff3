"""The paper's ablations of the reward, as parts: the axes and their variants (:mod:`.axes`), what the variants
share (encoders, indexes, nested corpus subsets: :mod:`.shared`, :mod:`.subsets`) and the report
(``reports/ablations/<axis>.json|md|png``, :mod:`.report`). The stage that runs one: :mod:`cim.stages.ablate`
(``cim ablate AXIS``); docs/ablations.md."""
