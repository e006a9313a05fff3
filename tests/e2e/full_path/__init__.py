"""The full-scale path end to end on CPU with tiny models of the real architectures (docs/full-scale.md).

``python -m cim.smoke --out DIR`` (``make smoke-full``). Modules: :mod:`.tokenizers` and :mod:`.models`
(offline builders of tiny random Qwen2.5-VL, T5, Qwen3 and an OpenCLIP ViT config), :mod:`.data` (the
SC-Captioner-format benchmark and the release-format corpus from the demo world), :mod:`.rollout` (verl's
data, agent and reward loops with an HF-generate rollout server), :mod:`.grpo` (one GRPO update and verl's
checkpoint layout), :mod:`.chain` (the steps), :mod:`.runner` (timings, summary, the first failure).
Nothing here is imported by the rest of CIM.
"""
