"""Every pluggable kind of CIM, in one place: its registry and the modules that hold its built-in entries.

An entry is declared where its ``@REGISTRY.register("name")`` decorator stands, nowhere else; a registry
imports its modules, the built-ins its entry-point ``group`` declares in pyproject.toml (those of a higher
floor, which this low module does not name) and the third-party ``cim.plugins`` entry points
(:func:`cim.registry.load_plugins`) on its first read, so a stage imports the code of the kinds it uses.
Importing this module imports no model code. Closed choices the code branches on (``reward.mode``,
``index.kind``, ...) are not plugins: the schema declares them (:func:`cim.config.choices`).

To add an entry of your own, import the registry from here and register on it; to make it reach the ``cim``
command, DVC and the flows, ship it in a package with a ``cim.plugins`` entry point (docs/extending.md).
"""
from __future__ import annotations

from cim.registry import Registry

__all__ = ["TEXT_ENCODERS", "IMAGE_ENCODERS", "DATASET_FORMATS", "BENCHMARK_FORMATS", "CAPTIONERS", "PARSERS",
           "JUDGES", "METRICS", "GUARDS", "REGISTRIES"]


# builder(cfg.encoders.text) -> TextEncoder; builder(cfg.encoders.image) -> ImageEncoder
TEXT_ENCODERS: Registry = Registry("text encoder", config_key="encoders.text.name", modules=("cim.encoders.text",))
IMAGE_ENCODERS: Registry = Registry("image encoder", config_key="encoders.image.name",
                                    modules=("cim.encoders.image",))
# reader(annotations path, split=None) -> Iterator[Record]   (`cim manifest --format`)
DATASET_FORMATS: Registry = Registry("dataset format", modules=("cim.data.adapters",))
# a BenchmarkFormat subclass   (`format:` in configs/benchmarks/<name>.yaml)
BENCHMARK_FORMATS: Registry = Registry("benchmark format", modules=(
    "cim.eval.benchmarks.sc_captioner", "cim.eval.benchmarks.oxford_pet", "cim.eval.benchmarks.demo_world"))
# builder(cfg.eval.captioner, **info) -> Captioner   (CAPTIONERS.build(name, section)); `local` (cim.train, above
# the code that reads this registry) is declared in pyproject.toml's entry-point group cim.captioners
CAPTIONERS: Registry = Registry("captioner", config_key="eval.captioner.name", modules=(
    "cim.eval.captioners", "cim.eval.released"), group="cim.captioners")
# builder(model or None, device) -> SceneGraphParser
PARSERS: Registry = Registry("scene-graph parser", config_key="eval.parser.name",
                             modules=("cim.eval.parsers.spacy_rules", "cim.eval.parsers.factual"))
# builder(model or None, *, parser, backend, device) -> Judge
JUDGES: Registry = Registry("judge", config_key="eval.judge.name", modules=("cim.eval.judges",))
# compute function, info = its columns, scope, order, ... (cim.eval.metrics.metric(name) -> Metric)
METRICS: Registry = Registry("metric", config_key="eval.metrics", modules=("cim.eval.metrics",))

# a cim.reward.guards.Guard subclass: cls(settings, corpus)(caption) -> value in [-1, 0]   (reward.guards)
GUARDS: Registry = Registry("reward guard", config_key="reward.guards", modules=("cim.reward.guards",))

REGISTRIES = (TEXT_ENCODERS, IMAGE_ENCODERS, DATASET_FORMATS, BENCHMARK_FORMATS, CAPTIONERS, PARSERS, JUDGES,
              METRICS, GUARDS)

