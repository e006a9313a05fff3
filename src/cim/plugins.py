"""Every pluggable kind of CIM, in one place: its registry and the module that registers each built-in entry.

Importing this module imports no model code. Checking a config against the registries (``load_config``)
reads the names declared here; an entry's module is imported when the entry is first used, so every command
imports only the code it runs (the DVC stages' deps are derived from that, tests/test_pipeline.py). A test
(tests/test_io_registry.py) checks that each module registers exactly the names declared for it.

To add an entry of your own, import the registry from here and register on it (docs/extending.md).
"""
from __future__ import annotations

from cim.registry import Registry

__all__ = ["TEXT_ENCODERS", "IMAGE_ENCODERS", "DATASET_FORMATS", "BENCHMARK_FORMATS", "CAPTIONERS", "PARSERS",
           "JUDGES", "METRICS", "REGISTRIES", "RELEASED_CHECKPOINTS", "JUDGE_BACKENDS", "SUBSTRING_MODES",
           "REWARD_MODES"]

# the authors' released checkpoints (cim.eval.released holds what each one is)
RELEASED_CHECKPOINTS = ("kkk5/CIM-Qwen2-VL-7B", "kkk5/CIM-Qwen2.5-VL-7B", "kkk5/CIM-LLaVA1.5-7B",
                        "kkk5/CIM-InternVL2-8B", "kkk5/CIM-InternVL2.5-8B", "kkk5/CIM-InternVL3-8B",
                        "kkk5/CIM-Qwen2-VL-7B-SFT", "kkk5/CIM-LLaVA1.5-7B-SFT")

TEXT_ENCODERS: Registry = Registry("text encoder", config_key="encoders.text.name",
                                   builtins={"sentence-transformers": "cim.encoders.text"})
IMAGE_ENCODERS: Registry = Registry("image encoder", config_key="encoders.image.name",
                                    builtins={"efficientnet-lite": "cim.encoders.image",
                                              "open_clip": "cim.encoders.image", "dinov3": "cim.encoders.image"})
DATASET_FORMATS: Registry = Registry("dataset format", builtins=dict.fromkeys(
    ("refinedcaps", "densefusion", "docci", "coco-ln", "sc-captioner-sft"), "cim.data.adapters"))
BENCHMARK_FORMATS: Registry = Registry("benchmark format", builtins={
    "sc-captioner": "cim.eval.benchmarks.sc_captioner", "oxford-pet": "cim.eval.benchmarks.oxford_pet",
    "demo-world": "cim.eval.benchmarks.demo_world"})
CAPTIONERS: Registry = Registry("captioner", config_key="eval.captioner.name", builtins={
    **dict.fromkeys(("levels", "file", "hf", "vllm"), "cim.eval.captioners"), "local": "cim.eval.local_captioner",
    **dict.fromkeys(RELEASED_CHECKPOINTS, "cim.eval.released")})
PARSERS: Registry = Registry("scene-graph parser", config_key="eval.parser.name",
                             builtins={"spacy": "cim.eval.parsers.spacy_rules", "factual": "cim.eval.parsers.factual"})
JUDGES: Registry = Registry("judge", config_key="eval.judge.name",
                            builtins=dict.fromkeys(("triples", "lm", "qwen3"), "cim.eval.judges"))
METRICS: Registry = Registry("metric", config_key="eval.metrics", builtins=dict.fromkeys(
    ("capture", "fine_grained", "relations_qa", "bleu_meteor", "cim", "verification", "parser_recall"),
    "cim.eval.metrics"))

REGISTRIES = (TEXT_ENCODERS, IMAGE_ENCODERS, DATASET_FORMATS, BENCHMARK_FORMATS, CAPTIONERS, PARSERS, JUDGES,
              METRICS)

# closed choices the code branches on (not plugins): how GRC and QIR combine into the reward (Eq. 3 and its
# Fig. 4 ablation; cim.reward.equations branches on them); how a chat-LM judge runs; CAPTURE's substring rule
REWARD_MODES = ("both", "grc", "qir")
JUDGE_BACKENDS = ("transformers", "vllm")
SUBSTRING_MODES = ("faithful", "word")
