"""Scene-graph parsers: the interface and registry (:mod:`.base`), one module per parser (``spacy``:
:mod:`.spacy_rules`, ``factual``: :mod:`.factual`)."""
from cim.eval.parsers.base import PARSERS, GraphBuilder, SceneGraph, SceneGraphParser, Triple, build_parser
from cim.eval.parsers.factual import FACTUAL_MODEL, FactualParser, parse_factual_output
from cim.eval.parsers.spacy_rules import DEFAULT_SPACY_MODEL, SpacyParser, caption_nouns, load_spacy

__all__ = ["PARSERS", "GraphBuilder", "SceneGraph", "SceneGraphParser", "Triple", "build_parser",
           "FACTUAL_MODEL", "FactualParser", "parse_factual_output", "DEFAULT_SPACY_MODEL", "SpacyParser",
           "caption_nouns", "load_spacy"]
