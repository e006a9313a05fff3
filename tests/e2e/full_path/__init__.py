"""The full-scale path end to end on CPU with tiny models of the real architectures (docs/full-scale.md).

A test harness, not part of the installed package (as verl keeps its end-to-end checks under
``tests/special_e2e``): ``PYTHONPATH=tests python -m e2e.full_path --out DIR`` (``make smoke-full``;
``tests/test_smoke_full.py`` runs it). Modules: :mod:`.tokenizers` and :mod:`.models` (offline builders of
tiny random Qwen2.5-VL, T5, Qwen3 and an OpenCLIP ViT config), :mod:`.data` (the SC-Captioner-format
benchmark and the release-format corpus from the demo world), :mod:`.rollout` (verl's data, agent and
reward loops with an HF-generate rollout server), :mod:`.grpo` (one GRPO update and verl's checkpoint
layout), :mod:`.chain` (the steps: :data:`.chain.STEPS`), :mod:`.runner` (timings, summary, the first
failure). It imports CIM; nothing in CIM imports it.
"""
