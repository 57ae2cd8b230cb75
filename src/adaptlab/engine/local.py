"""Local engine over a Hugging Face causal LM: batched option scoring and sampling that reuse
the KV cache of whatever the batch shares.

Layout of every batch (scoring and generation alike)::

    [ shared prefix P (cached once) ][ pad ... pad | row tokens ]      # pads sit after the prefix
    position_ids = P + cumsum(mask) - 1,  attention_mask = [1]*P + row mask

Rows are left-padded so that the tokens whose next-token log-probabilities we need sit at the
end of every row: scoring asks the model for only those logits (``logits_to_keep``) instead of
[B, L, V]. The shared prefix is the longest common token prefix of the batch's contexts (the
demonstrations of few-shot prompting), computed once and cached across calls; for ``n`` samples
of one prompt the prompt itself is the shared prefix. Where the model's attention is plain causal
softmax, rows attend to the one cached prefix through ``engine.shared_prefix`` (Hydragen's split
attention: the prefix's keys and values are read once for all rows, never copied per row);
otherwise the prefix KV is expanded to every row and ``generate`` copies the prefilled cache n
times. While decoding, the rows' own keys/values sit in a buffer with room for the new tokens
(``shared_prefix.RoomyLayer``): a step writes one slot instead of re-concatenating the
whole [B, H, T, d] cache. Rows are dropped as they finish (EOS or a stop string).
Multi-token options of one context (multiple choice) are scored after that context's KV, computed
once (``_score_grouped``): N x prompt + N x K x option tokens, not N x K x (prompt + option).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from adaptlab import text as text_path
from adaptlab.engine import Cost, OptionScore, decoding, shared_prefix
from adaptlab.models import cache_arg

MIN_PREFIX = 8  # shorter shared prefixes are not worth a cache


def _common_prefix(seqs: list[list[int]]) -> int:
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


class LocalLM:
    def __init__(self, backbone, model=None, batch_size: int = 16, max_length: int | None = None,
                 truncate: str = "left", progress=None, share_prefix: bool = True,
                 pack_tokens: int = 512, group_options: bool = True):
        self.backbone = backbone
        self.model = model if model is not None else backbone.model
        # attend to a shared prefix without per-row copies where the model's attention allows it
        self.share_prefix = share_prefix and shared_prefix.supported(self.model)
        self.pack_tokens = pack_tokens      # real tokens per forward when rows are packed (scoring)
        self.group_options = group_options  # multi-token options of one context: the context runs once
        self.plain = model is None or model is backbone.model   # a bare HF model: may skip all-ones masks
        self.tok = backbone.tokenizer
        self.batch_size = batch_size
        cfg_max = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = max_length or min(cfg_max, 2048)
        self.truncate = truncate
        self.cost = Cost()
        self.progress = progress            # optional callable(n, total): n more of a call's total rows, per forward
        self._rows = 0                      # the current score call's rows (progress's total)
        self._prefix: tuple[tuple[int, ...], list] | None = None   # (ids, [(k, v) per layer])
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if self.tok.eos_token_id is not None:
            eos.add(self.tok.eos_token_id)
        self.eos_ids = eos
        self.device = next(self.model.parameters()).device
        self._head = decoding.linear_head(self.model) if self.plain else None  # W of z = h W^T
        self.finish_reasons: list[list[str]] = []  # of the last generate(): stop string | "eos" | "length"

    # ------------------------------------------------------------------ tokenization (adaptlab.text)
    def encode(self, text: str) -> list[int]:
        return text_path.encode(self.tok, text)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return text_path.encode_pair(self.tok, context, continuation)

    def _fit_context(self, ids: list[int], n_target: int) -> list[int]:
        """The context cut (from the task's side) so that ``n_target`` more tokens fit the model's
        context: the rule training uses (``text.encode_lm``)."""
        out = text_path.fit_context(ids, n_target, self.max_length, self.truncate)
        if len(out) < len(ids):
            self.cost.truncated += 1
        return out

    def chat(self, text: str) -> str:
        return text_path.chat(self.tok, text)

    # ------------------------------------------------------------------ shared prefix cache
    def clear_cache(self) -> None:
        """Forget the cached shared prefix (the next call computes it again)."""
        self._prefix = None

    def _prefix_kv(self, ids: list[int]) -> list:
        key = tuple(ids)
        on = getattr(self.model, "adapters_on", True)    # the same ids give other key/values with adapters off
        if self._prefix is not None and self._prefix[0] == key and self._prefix[2] == on:
            return self._prefix[1]
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True,
                             logits_to_keep=1)
        self.cost.forwards += 1
        self.cost.prompt_tokens += len(ids)
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._prefix = (key, kv, on)
        return kv

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] ids and mask, each row's tokens at the end."""
        L = max(len(r) for r in seqs)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((len(seqs), L), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, r in enumerate(seqs):
            ids[i, L - len(r):] = torch.tensor(r)
            mask[i, L - len(r):] = 1
        return ids, mask

    def _score_grouped(self, rows, results) -> list:
        """Multi-token options of one context (multiple choice): the context runs once and only
        the options after it, N x prompt + N x K x option tokens instead of N x K x (prompt +
        option). Per batch of questions, two forwards::

            prefill  [ base B ][ pad | question q ]                   -> KV [G, H, B + Lq, d]
            options  KV[g(row)] + [ pad | option tokens ]             -> logits of the options

        (``base``: the questions' common start, e.g. few-shot demonstrations, cached once; an
        option row attends to its own question's KV through the attention mask, pads masked.)
        Returns the rows left for the ungrouped path."""
        groups: dict[int, list[int]] = {}
        for k, (_, opts) in enumerate(rows):
            if len(opts) == 1:
                groups.setdefault(opts[0][0], []).append(k)
        plans = []                                  # (question ids, row indices)
        for ks in groups.values():
            if len(ks) < 2:
                continue
            seqs = [rows[k][0] for k in ks]
            # every row keeps the len(c) positions that predict its option c after the question
            Pg = min(_common_prefix(seqs), min(len(rows[k][0]) - len(rows[k][1][0][2]) for k in ks))
            if Pg >= MIN_PREFIX:
                plans.append((seqs[0][:Pg], ks))
        if not plans:
            return rows
        heads = [p for p, _ in plans]
        Pb = min(_common_prefix(heads), min(len(h) for h in heads) - 1) if len(heads) > 1 else 0
        base = self._prefix_kv(heads[0][:Pb]) if Pb >= MIN_PREFIX else None
        Pb = Pb if base is not None else 0
        plans.sort(key=lambda p: -len(p[0]))
        s = 0
        while s < len(plans):                       # questions per batch: ~batch_size option rows
            chunk, n_rows = [], 0
            while s < len(plans) and (not chunk or n_rows + len(plans[s][1]) <= self.batch_size):
                chunk.append(plans[s])
                n_rows += len(plans[s][1])
                s += 1
            self._score_chunk(rows, chunk, base, Pb, results)
            if self.progress:
                self.progress(n_rows, self._rows)
        done = {k for _, ks in plans for k in ks}
        return [r for k, r in enumerate(rows) if k not in done]

    def _score_chunk(self, rows, chunk, base, Pb: int, results) -> None:
        G, dev = len(chunk), self.device
        q_ids, q_mask = self._left_pad([head[Pb:] for head, _ in chunk])            # [G, Lq]
        cache = None
        if base is not None:                        # [1, H, Pb, d] -> [G, H, Pb, d]
            cache = DynamicCache(ddp_cache_data=[(k.expand(G, -1, -1, -1), v.expand(G, -1, -1, -1)) for k, v in base],
                                 config=self.model.config)
        q_full = torch.cat([torch.ones((G, Pb), dtype=torch.long), q_mask], 1)        # [G, Pb + Lq]
        out = self._forward(input_ids=q_ids.to(dev), attention_mask=q_full.to(dev),
                            position_ids=(Pb + q_mask.cumsum(-1) - 1).clamp(min=Pb).to(dev),
                            past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.cost.forwards += 1
        self.cost.prompt_tokens += int(q_mask.sum())
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]   # [G, H, Pb + Lq, d]
        owner = [g for g, (_, ks) in enumerate(chunk) for _ in ks]
        tails = [rows[k][0][len(head):] for head, ks in chunk for k in ks]
        o_ids, o_mask = self._left_pad(tails)                                        # [R, Lo]
        sel = torch.tensor(owner, device=dev)
        o_cache = DynamicCache(ddp_cache_data=[(k.index_select(0, sel), v.index_select(0, sel)) for k, v in kv],
                               config=self.model.config)                             # [R, H, Pb + Lq, d]
        lengths = q_full.sum(1)[torch.tensor(owner)]                                  # tokens before each option
        full = torch.cat([q_full[torch.tensor(owner)], o_mask], 1)                    # [R, Pb + Lq + Lo]
        K = max(len(rows[k][1][0][2]) for _, ks in chunk for k in ks)
        logits = self._forward(input_ids=o_ids.to(dev), attention_mask=full.to(dev),
                               position_ids=(lengths[:, None] + o_mask.cumsum(-1) - 1).to(dev),
                               past_key_values=o_cache, use_cache=True, logits_to_keep=K).logits   # [R, K, V]
        self.cost.forwards += 1
        self.cost.prompt_tokens += int(o_mask.sum())
        logp = F.log_softmax(logits.float(), dim=-1)
        r = 0
        for _, ks in chunk:
            for k in ks:
                i, j, c = rows[k][1][0]
                lp = logp[r, torch.arange(K - len(c), K), torch.tensor(c)].tolist()   # the last len(c) positions
                results[i][j] = OptionScore(logprob=float(sum(lp)), token_logprobs=lp)
                r += 1

    def _batch_inputs(self, rows: list[list[int]], prefix: list[int], room: int = 0, share: bool = True):
        """Left-pad ``rows`` after the cached ``prefix``; returns model kwargs (``room``: free
        cache slots per row for tokens to be generated; ``share=False``: the prefix's keys and
        values repeated per row in a plain cache, never the shared-prefix attention)."""
        P, B = len(prefix), len(rows)
        ids, mask = self._left_pad(rows)
        pos = (P + mask.cumsum(-1) - 1).clamp(min=P if P else 0)
        full_mask = torch.cat([torch.ones((B, P), dtype=torch.long), mask], dim=1)
        kw = dict(input_ids=ids.to(self.device), attention_mask=full_mask.to(self.device),
                  position_ids=pos.to(self.device), use_cache=True)
        if P and self.share_prefix and share:
            # one [1, H, P, d] prefix for all rows (engine.shared_prefix)
            kw["past_key_values"] = kw["shared_prefix"] = shared_prefix.make_cache(
                self._prefix_kv(prefix), self.model, room)
        elif P:
            kv = self._prefix_kv(prefix)
            # [1, H, P, d] -> [B, H, P, d]
            kw["past_key_values"] = DynamicCache(
                ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in kv],
                config=self.model.config)
        self.cost.forwards += 1
        self.cost.prompt_tokens += int(mask.sum())
        return kw

    def _forward(self, body: bool = False, **kw):
        """A model call (``body``: the bare model's decoder only, returning hidden states). For the
        bare HF model an all-ones mask is dropped so attention takes its unmasked fast path (no
        [B, 1, q, k] mask is built; n samples of one prompt never need one); wrapped (tuned)
        models always get the mask."""
        m = kw.get("attention_mask")
        if self.plain and m is not None and bool(m.all()):
            kw["attention_mask"] = None
        model = self.model.get_decoder() if body else self.model
        name = cache_arg(model)
        if name != "past_key_values" and "past_key_values" in kw:
            kw[name] = kw.pop("past_key_values")
        if kw.get("shared_prefix") is not None:
            with shared_prefix.active(self.model):
                return model(**kw)
        kw.pop("shared_prefix", None)
        return model(**kw)

    def _decode(self, **kw):
        """One decode step: (cache, next-token logits [B, V]). A bare linear-head model runs its
        body and the engine takes the vocabulary projection (``decoding.project``)."""
        rows = kw["input_ids"].shape[0]
        if self._head is None or not decoding.ROWS[0] <= rows <= decoding.ROWS[1]:
            o = self._forward(**kw)
            return o.past_key_values, o.logits[:, -1, :]
        o = self._forward(body=True, **kw)
        return o.past_key_values, decoding.project(self._head, o.last_hidden_state[:, -1, :])

    def _split_prefix(self, seqs: list[list[int]], min_rest: int | list[int] = 1) -> int:
        """Length of the shared prefix worth caching; every row keeps at least ``min_rest``
        (per row, or one for all) tokens after it, the positions whose logits are read."""
        rest = min_rest if isinstance(min_rest, list) else [min_rest] * len(seqs)
        P = _common_prefix(seqs)
        P = min(P, min(len(s) - r for s, r in zip(seqs, rest)))
        if P < MIN_PREFIX or len(seqs) < 2 and not (self._prefix and len(self._prefix[0]) == P):
            return 0
        return P

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(self, contexts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[OptionScore]]:
        t0 = time.perf_counter()
        if len(contexts) != len(options):
            raise ValueError("score: one list of options per context")
        self.cost.calls += len(contexts)
        # rows: (token ids, [(context i, option j, continuation ids)]) -- one row per context
        # when every option is a single token (read the last position), else one per option.
        rows: list[tuple[list[int], list[tuple[int, int, list[int]]]]] = []
        for i, (ctx, opts) in enumerate(zip(contexts, options)):
            pairs = [self._encode_pair(ctx, o) for o in opts]
            ctx_ids = pairs[0][0] if pairs else self.encode(ctx)
            conts = [c for _, c in pairs]
            before = self.cost.truncated
            if all(len(c) == 1 for c in conts):
                rows.append((self._fit_context(ctx_ids, 1), [(i, j, c) for j, c in enumerate(conts)]))
            else:
                for j, c in enumerate(conts):
                    c = c[: self.max_length - 1]
                    seq = (self._fit_context(ctx_ids, len(c)) + c)[:-1]     # encode_lm's row, less its last token
                    rows.append((seq, [(i, j, c)]))
            self.cost.truncated = before + (self.cost.truncated > before)  # count inputs, not option rows
        results: list[list[OptionScore | None]] = [[None] * len(o) for o in options]
        self._rows = len(rows)
        if self.group_options and self.share_prefix:
            rows = self._score_grouped(rows, results)
        # every row keeps after the prefix the positions that predict its options
        need = [max(len(c) for _, _, c in opts) if len(opts) == 1 else 1 for _, opts in rows]
        P = self._split_prefix([r for r, _ in rows], need) if rows else 0
        prefix = rows[0][0][:P] if P else []
        order = sorted(range(len(rows)), key=lambda k: -len(rows[k][0]))
        if P and self.share_prefix:
            self._score_packed(rows, order, prefix, results)
            self.cost.seconds += time.perf_counter() - t0
            return results  # type: ignore[return-value]
        for s in range(0, len(order), self.batch_size):
            idx = order[s: s + self.batch_size]
            batch = [rows[k][0][P:] for k in idx]
            self._follow_rows([rows[k][1][0][0] for k in idx], start=True)     # each row's context
            K = max(len(c) for k in idx for _, _, c in rows[k][1])
            kw = self._batch_inputs(batch, prefix)
            logits = self._forward(**kw, logits_to_keep=K).logits  # [B, K, V]
            logp = F.log_softmax(logits.float(), dim=-1)
            for b, k in enumerate(idx):
                for i, j, c in rows[k][1]:
                    # the len(c) positions ending at the row's last one predict c
                    n = len(c) if len(rows[k][1]) == 1 else 1
                    pos = torch.arange(K - n, K)
                    lp = logp[b, pos, torch.tensor(c[-n:] if n > 1 else c)]
                    toks = lp.tolist()
                    results[i][j] = OptionScore(logprob=float(sum(toks)), token_logprobs=toks)
            if self.progress:
                self.progress(len(idx), self._rows)
        self.cost.seconds += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    def _score_packed(self, rows, order: list[int], prefix: list[int], results) -> None:
        """Score rows that share the cached ``prefix`` packed end to end, ~``pack_tokens`` real
        tokens a forward and no padding: the linear layers (most of the time) see only real
        tokens, in the chunk size this CPU's matmuls run fastest at; only the attention over the
        rows' own tokens lays them out as padded rows (``shared_prefix.Packed``)::

            [ prefix P ][ row a | row b | row c ]       position_ids restart at P for every row
        """
        P = len(prefix)
        kv = self._prefix_kv(prefix)
        s = 0
        while s < len(order):
            pack, T = [], 0
            while s < len(order) and (not pack or T + len(rows[order[s]][0]) - P <= self.pack_tokens):
                pack.append(order[s])
                T += len(rows[order[s]][0]) - P
                s += 1
            tails = [rows[k][0][P:] for k in pack]
            keep: list[int] = []                       # packed positions whose logits are read
            reads = []                                 # (context i, option j, tokens, first index in keep)
            end = 0
            for k, tail in zip(pack, tails):
                end += len(tail)
                opts = rows[k][1]
                if len(opts) == 1:                     # one option row: its last len(c) positions predict c
                    i, j, c = opts[0]
                    reads.append((i, j, c, len(keep)))
                    keep += range(end - len(c), end)
                else:                                  # single-token options: the row's last position
                    reads += [(i, j, c, len(keep)) for i, j, c in opts]
                    keep.append(end - 1)
            cache = shared_prefix.make_cache(kv, self.model)
            cache.packed = shared_prefix.Packed.of([len(t) for t in tails], self.device)
            ids = torch.tensor([[t for tail in tails for t in tail]], device=self.device)          # [1, T]
            pos = torch.tensor([[P + j for tail in tails for j in range(len(tail))]], device=self.device)
            mask = torch.ones((1, P + T), dtype=torch.long, device=self.device)   # as _batch_inputs: [prefix ; rows]
            out = self._forward(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                shared_prefix=cache, use_cache=True,
                                logits_to_keep=torch.tensor(keep, device=self.device))
            self.cost.forwards += 1
            self.cost.prompt_tokens += T
            logp = F.log_softmax(out.logits[0].float(), dim=-1)        # [len(keep), V]
            for i, j, c, at in reads:
                lp = logp[torch.arange(at, at + len(c)), torch.tensor(c)].tolist()
                results[i][j] = OptionScore(logprob=float(sum(lp)), token_logprobs=lp)
            if self.progress:
                self.progress(len(pack), self._rows)

    # ------------------------------------------------------------------ generation
    def _follow_rows(self, sel, start: bool = False) -> None:
        """The batch's rows are now the earlier rows ``sel`` (``start``: the prompts ``sel`` of
        ``generate``, or the contexts ``sel`` of ``score``), in that order. Nothing here; a model with per-row state follows the rows
        (``serve.mixed``: each row's adapter)."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], n: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, stop: Sequence[str] | None = None,
                 top_p: float = 1.0, seed: int | None = None, on_token=None) -> list[list[str]]:
        """``on_token(prompt_index, sample_index, token_id)``, if given, is called in the decode
        loop for every token as soon as it is drawn (EOS excluded; a token that completes a stop
        string included: the returned text is cut before the stop string). Streaming uses it."""
        t0 = time.perf_counter()
        self.cost.calls += len(prompts) * n
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else seed)
        stop = [s for s in (stop or []) if s]
        encoded = [self._fit_context(self.encode(p), 1) for p in prompts]
        out: list[list[str]] = [[] for _ in prompts]
        reasons: list[list[str]] = [[] for _ in prompts]
        # at most ~batch_size rows decode together: group prompts so that groups x n fit
        per = max(1, self.batch_size // max(1, n))
        order = sorted(range(len(prompts)), key=lambda k: -len(encoded[k]))
        for s in range(0, len(order), per):
            idx = order[s: s + per]
            self._follow_rows(idx, start=True)
            # the group's row r is prompt idx[r // n], sample r % n
            cb = None if on_token is None else (lambda row, t, idx=idx: on_token(idx[row // n], row % n, t))
            texts, why = self._generate_group([encoded[k] for k in idx], n, max_new_tokens,
                                              temperature, top_p, stop, gen, cb)
            for b, k in enumerate(idx):
                out[k] = texts[b * n:(b + 1) * n]
                reasons[k] = why[b * n:(b + 1) * n]
            if self.progress:
                self.progress(len(idx), len(prompts))
        self.cost.seconds += time.perf_counter() - t0
        self.finish_reasons = reasons     # per completion: the stop string that ended it, "eos" or "length"
        return out

    def _generate_group(self, seqs, n, max_new_tokens, temperature, top_p, stop, gen,
                        on_token=None) -> tuple[list[str], list[str]]:
        max_new_tokens = min(max_new_tokens, max(1, self.max_length - max(len(s) for s in seqs)))
        P = self._split_prefix(seqs)
        if not P and n > 1 and len(seqs) == 1 and self.share_prefix and len(seqs[0]) > MIN_PREFIX:
            P = len(seqs[0]) - 1            # n samples of one prompt: the prompt is their shared prefix
        prefix = seqs[0][:P] if P else []
        kw = self._batch_inputs([s[P:] for s in seqs], prefix, room=max_new_tokens)
        shared = kw.get("shared_prefix")
        out = self._forward(**kw, logits_to_keep=1)
        cache = out.past_key_values
        last = out.logits[:, -1, :]                                   # [B, V]
        pos = kw["position_ids"][:, -1:]                              # [B, 1]
        mask = kw["attention_mask"]
        if n > 1:
            cache.batch_repeat_interleave(n)                          # [B*n, H, T, d]
            last = last.repeat_interleave(n, 0)
            pos = pos.repeat_interleave(n, 0)
            mask = mask.repeat_interleave(n, 0)
            self._follow_rows([b for b in range(len(seqs)) for _ in range(n)])
        if max_new_tokens > 1 and shared is None:
            cache.layers = [shared_prefix.RoomyLayer(layer.keys, layer.values, max_new_tokens) for layer in cache.layers]
        rows = last.shape[0]
        generated: list[list[int]] = [[] for _ in range(rows)]
        active = list(range(rows))                                    # row ids still decoding
        texts = [""] * rows
        why = ["length"] * rows
        for step in range(max_new_tokens):
            nxt = decoding.sample(last, temperature, top_p, gen).tolist()
            still = []
            for a, row in enumerate(active):
                t = nxt[a]
                if t in self.eos_ids:
                    why[row] = "eos"
                    continue
                generated[row].append(t)
                self.cost.generated_tokens += 1
                if on_token is not None:
                    on_token(row, t)
                if stop:
                    text = self.tok.decode(generated[row], skip_special_tokens=True)
                    if any(s in text for s in stop):
                        why[row] = "stop"
                        continue
                still.append(a)
            if not still or step == max_new_tokens - 1:
                break
            if len(still) < len(active):
                cache.batch_select_indices(torch.tensor(still, device=self.device))
                mask, pos = mask[still], pos[still]
                self._follow_rows(still)
                nxt = [nxt[a] for a in still]
                active = [active[a] for a in still]
            else:
                active = list(active)
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=mask.device)], 1)
            pos = pos + 1
            ids = torch.tensor([[t] for t in nxt], device=self.device)
            cache, last = self._decode(input_ids=ids, attention_mask=mask, position_ids=pos,
                                       past_key_values=cache, use_cache=True, shared_prefix=shared)
            self.cost.forwards += 1
        for row in range(rows):
            text = self.tok.decode(generated[row], skip_special_tokens=True)
            hits = [(text.find(s), s) for s in stop if s in text]
            if hits:
                cut, first = min(hits)
                texts[row], why[row] = text[:cut], first
            else:
                texts[row] = text
        return texts, why
