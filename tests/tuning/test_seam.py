"""The seam's hook points for prompt-type methods: soft embeddings and key/value prefixes go
through TunedModel.forward, so the engine's cached scoring and generation see them. Uses
test-only prompt modules (the real methods live in their own files)."""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.engine.local import LocalLM
from adaptlab.tuning import TunedModel


class SoftPrompt(nn.Module):
    def __init__(self, n, hidden):
        super().__init__()
        self.n_virtual = n
        self.prompt_embeddings = nn.Parameter(torch.randn(n, hidden))

    def embeds(self, b):
        return self.prompt_embeddings.unsqueeze(0).expand(b, -1, -1)     # [B, n, H]

    def past_key_values(self, b):
        return None


class PrefixKV(nn.Module):
    def __init__(self, n, layers, heads, dim):
        super().__init__()
        self.n_virtual = n
        self.prefix_kv = nn.Parameter(torch.randn(layers, 2, heads, n, dim))

    def embeds(self, b):
        return None

    def past_key_values(self, b):
        return [(kv[0].unsqueeze(0).expand(b, -1, -1, -1), kv[1].unsqueeze(0).expand(b, -1, -1, -1))
                for kv in self.prefix_kv]                                # [B, H_kv, n, d] per layer


def _greedy_no_cache(tuned, ids, steps):
    """Reference: recompute the whole sequence each step, no KV cache."""
    seq = list(ids)
    for _ in range(steps):
        logits = tuned(input_ids=torch.tensor([seq]), use_cache=False).logits
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(ids):]


def _tuned(bb, kind):
    t = TunedModel.wrap(bb, "test", None)
    cfg = bb.model.config
    if kind == "embeds":
        t.add_prompt("prompt_encoder", SoftPrompt(3, cfg.hidden_size))
    else:
        d = cfg.hidden_size // cfg.num_attention_heads
        t.add_prompt("prefix_encoder", PrefixKV(3, cfg.num_hidden_layers, cfg.num_key_value_heads, d))
    return t.eval()


def test_wrap_shares_storage_but_not_modules(tiny_decoder):
    t = TunedModel.wrap(tiny_decoder, "test", None)
    a = tiny_decoder.model.model.layers[0].self_attn.q_proj
    b = t.model.model.layers[0].self_attn.q_proj
    assert a is not b and a.weight is not b.weight
    assert a.weight.data_ptr() == b.weight.data_ptr()
    b.weight.requires_grad_(False)
    assert a.weight.requires_grad
    assert t.model.lm_head.weight is t.model.model.embed_tokens.weight     # ties kept


def test_prompt_hooks_generate_with_cache(tiny_decoder):
    for kind in ("embeds", "kv"):
        t = _tuned(tiny_decoder, kind)
        lm = LocalLM(tiny_decoder, model=t)
        prompt = "Review: a great movie"
        ids = lm.encode(prompt)
        ref = _greedy_no_cache(t, ids, 6)
        out = lm.generate([prompt], max_new_tokens=6)[0][0]
        assert out == tiny_decoder.tokenizer.decode(ref, skip_special_tokens=True), kind
        x = torch.tensor([ids])
        assert not torch.allclose(t(input_ids=x).logits, tiny_decoder.model(input_ids=x).logits)  # it acts


def test_prompt_hooks_score_with_shared_prefix(tiny_decoder):
    t = _tuned(tiny_decoder, "embeds")
    lm = LocalLM(tiny_decoder, model=t)
    shared = "Review: a great movie with a fine cast\nSentiment: positive\n\n"
    ctxs = [shared + "Review: an awful film\nSentiment:", shared + "Review: great\nSentiment:"]
    got = lm.score(ctxs, [[" negative", " positive"]] * 2)
    assert lm.cost.forwards >= 2
    for c, row in zip(ctxs, got):
        ids = lm.encode(c)
        logp = torch.log_softmax(t(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        for opt, s in zip([" negative", " positive"], row):
            tok = lm._encode_pair(c, opt)[1]
            if len(tok) == 1:
                assert abs(float(logp[tok[0]]) - s.logprob) < 1e-4
