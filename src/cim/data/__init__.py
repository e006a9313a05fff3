"""Corpus manifests, dataset adapters and the generated demo world.

- :mod:`cim.data.manifest`: read/write corpus manifests and sources files (jsonl, atomic writes).
- :mod:`cim.data.adapters`: RefinedCaps, DenseFusion-1M, DOCCI, COCO Localized Narratives -> manifest.
- :mod:`cim.data.world`: the generated demo world (scene graphs, drawn images, graded captions).

Nothing heavy is imported here; import the submodule you need.
"""
