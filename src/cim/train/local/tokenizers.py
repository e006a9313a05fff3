"""Tokenizers of the local captioner: a word-level vocabulary built from the SFT captions (``tiny``), or a
transformers tokenizer behind the same small interface (``smollm2-135m``)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from cim.io import atomic_write_text

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


class WordTokenizer:
    """Lower-cased words and punctuation; the vocabulary (sorted, so any run builds the same one) comes from
    the SFT captions."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.index[t] for t in (PAD, BOS, EOS, UNK))

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z]+(?:-[a-z]+)?|[0-9]+|[^\sa-z0-9]", text.lower())

    @classmethod
    def build(cls, texts: Sequence[str]) -> "WordTokenizer":
        words = sorted({w for t in texts for w in cls.split(t)})
        return cls([PAD, BOS, EOS, UNK] + words)

    @classmethod
    def load(cls, path: Path) -> "WordTokenizer":
        return cls(json.loads(path.read_text(encoding="utf-8"))["vocab"])

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.vocab[i])
        text = " ".join(out)
        text = re.sub(r" ([,.;:!?])", r"\1", text)
        return text[:1].upper() + text[1:]

    def __len__(self) -> int:
        return len(self.vocab)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"kind": "word", "vocab": self.vocab}))


class HFTokenizer:
    """A transformers tokenizer behind the same small interface (for the pretrained LM option)."""

    def __init__(self, tok):
        self.tok = tok
        self.eos_id = tok.eos_token_id
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tok.decode(ids, skip_special_tokens=True).strip()

    def __len__(self) -> int:
        return len(self.tok)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"kind": "hf"}))
