"""``factual``: the FACTUAL Flan-T5 scene-graph parser the reference CAPTURE uses
(``lizhuang144/flan-t5-base-VG-factual-sg``; beam 5, at most 128 output tokens, input truncated at 64
tokens), from a local path or the local hub cache only. Sentences are split with spaCy. The generated text is
cleaned and read as FACTUAL's own parser does (:func:`clean_factual_output`, :func:`parse_factual_output`).
"""
from __future__ import annotations

import re
from typing import Sequence

from cim.errors import WeightsNotFound
from cim.eval.parsers.base import PARSERS, GraphBuilder, SceneGraph, Triple
from cim.eval.parsers.spacy_rules import DEFAULT_SPACY_MODEL, caption_nouns, load_spacy

__all__ = ["FACTUAL_MODEL", "FactualParser", "clean_factual_output", "parse_factual_output", "space_out"]

FACTUAL_MODEL = "lizhuang144/flan-t5-base-VG-factual-sg"


def space_out(text: str) -> str:
    """Single spaces around every bracket and comma, as FACTUAL formats its output before cleaning it."""
    return " ".join(re.sub(r"([(),])", r" \1 ", text).split())


def clean_factual_output(text: str) -> str:
    """FACTUAL's own clean-up of a generated graph (our code, its behaviour): facts are split at ``) ,``;
    when the output is cut off (no closing bracket at the end) the truncated last fact is dropped, or, when
    it is the only fact, only the part before its first comma is kept (``( man , hold`` -> ``( man )``);
    brackets and spaces are stripped from each fact, duplicates removed, the rest sorted and rejoined as
    ``( a , b , c ) , ( d )``."""
    text = space_out(text.replace("Generate Scene Graph:", "").strip())
    facts = text.split(") ,")
    if not text.endswith(")"):
        facts = facts[:-1] if len(facts) > 1 else [facts[0].split(",")[0]]
    kept = sorted({f.strip().strip("()").strip() for f in facts} - {""})
    return " , ".join(f"( {f} )" for f in kept)


def parse_factual_output(text: str) -> tuple[list[str], list[tuple[str, str]], list[Triple]]:
    """FACTUAL's linearised graph ``( a , rel , b ) , ( a , is , red )`` -> (entities, (entity, attr), triples),
    after :func:`clean_factual_output`, read the way FACTUAL reads it: a fact of three parts is a triple
    (``is`` -> an attribute, a count when numeric); any other fact is skipped, unless it is the only one, when
    its first part is an entity."""
    entities: list[str] = []
    attrs: list[tuple[str, str]] = []
    triples: list[Triple] = []
    facts = clean_factual_output(text).split(") ,")
    for fact in facts:
        parts = [p.strip() for p in fact.strip().strip("()").split(",")]
        if len(parts) == 3:
            s, r, o = parts
            if r == "is":
                attrs.append((s, o))
            else:
                triples.append((s, r, o))
        elif len(facts) == 1 and parts[0]:
            entities.append(parts[0])
    return entities, attrs, triples


class FactualParser:
    """The FACTUAL Flan-T5 scene-graph parser, local weights only (hub cache or a directory)."""

    def __init__(self, model: str = FACTUAL_MODEL, device: str = "auto", beam_size: int = 5,
                 max_input_tokens: int = 64, max_output_tokens: int = 128, batch_size: int = 32,
                 spacy_model: str = DEFAULT_SPACY_MODEL):
        self.model_name = model
        self.beam_size = beam_size
        self.max_input_tokens = max_input_tokens
        self.max_output_tokens = max_output_tokens
        self.batch_size = batch_size
        self.spacy_model = spacy_model
        self.device = device
        self._tok = self._model = None

    @property
    def name(self) -> str:
        return f"factual:{self.model_name}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "factual-t5", "model": self.model_name, "beam_size": self.beam_size,
                "max_input_tokens": self.max_input_tokens, "max_output_tokens": self.max_output_tokens,
                "sentence_splitter": self.spacy_model}

    def _load(self):
        if self._model is not None:
            return
        try:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_name, local_files_only=True)
            model = AutoModelForSeq2SeqLM.from_pretrained(self.model_name, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsNotFound(
                f"FACTUAL parser weights {self.model_name!r} are not on this machine (local files only). "
                f"Download them where the hub is reachable (`huggingface-cli download {FACTUAL_MODEL}`) and "
                f"copy the hub cache, or pass a directory with eval.parser.model=/path/to/flan-t5-base-VG-"
                f"factual-sg; offline, use eval.parser.name=spacy") from exc
        from cim.encoders.base import resolve_device

        device = resolve_device(self.device)
        self._tok, self._model, self._device = tok, model.to(device).eval(), device

    def generate(self, sentences: Sequence[str]) -> list[str]:
        """Raw linearised graphs, one per sentence."""
        import torch

        self._load()
        out: list[str] = []
        for i in range(0, len(sentences), self.batch_size):
            batch = ["Generate Scene Graph: " + s.strip() for s in sentences[i:i + self.batch_size]]
            enc = self._tok(batch, max_length=self.max_input_tokens, truncation=True, padding=True,
                            return_tensors="pt").to(self._device)
            with torch.no_grad():
                ids = self._model.generate(**enc, use_cache=True, num_beams=self.beam_size,
                                           max_length=self.max_output_tokens, early_stopping=self.beam_size > 1,
                                           decoder_start_token_id=self._tok.pad_token_id)
            out.extend(self._tok.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))
        return out

    def parse(self, caption: str) -> SceneGraph:
        return self.parse_many([caption])[0]

    def parse_many(self, captions: Sequence[str]) -> list[SceneGraph]:
        self._load()
        docs = list(load_spacy(self.spacy_model).pipe([c or "" for c in captions]))
        sentences = [[s.text for s in doc.sents if s.text.strip()] for doc in docs]
        flat = [s for sents in sentences for s in sents]
        raw = self.generate(flat) if flat else []
        graphs, k = [], 0
        for doc, sents in zip(docs, sentences):
            b = GraphBuilder()
            for text in raw[k:k + len(sents)]:
                entities, attrs, triples = parse_factual_output(text)
                for e in entities:
                    b.entity(e)
                for e, a in attrs:
                    b.attribute(e, a)
                for s, r, o in triples:
                    b.relation(s, r, o)
            k += len(sents)
            graphs.append(b.build(caption_nouns(doc), self.name))
        return graphs



@PARSERS.register("factual")
def _build(model: str | None, device: str) -> FactualParser:
    return FactualParser(model or FACTUAL_MODEL, device=device)
