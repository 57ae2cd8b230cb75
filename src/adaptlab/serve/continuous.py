"""Continuous batching: requests join and leave the decode loop between decode steps (issue 24).

Orca (Yu et al., OSDI 2022) schedules at the granularity of one iteration instead of one request:
after every decode step, finished sequences leave the batch and waiting ones join it, so a short
request never waits for a long one to finish and the batch stays full. vLLM and TGI do the same.

Here the running batch is a set of rows (a row = one sample of one prompt of one request) with
their KV cache, attention mask, position ids and next-token logits. Each worker iteration:

  1. **join**: waiting generate requests that fit (rows <= ``max_batch``) are prefilled together in
     one forward -- their adapters' soft tokens and prefix keys/values included
     (``MixedLM._batch_inputs``); on one engine, a prompt prefix they share computed once
     (``LocalLM._prefix_kv``) --, each prompt's cache repeated for its n samples, and spliced in::

        cache  [B1, H, T1, d] (+) [B2, H, T2, d]  ->  [B1 + B2, H, max(T1, T2), d]
        mask   [B1, T1]       (+) [B2, T2]        ->  [B1 + B2, max(T1, T2)]

     the shorter side left-padded with zero keys/values under mask 0. Every row keeps its own
     position ids, so its attention sees exactly its own tokens wherever it sits in the batch.
  2. **step**: one token for every row. Greedy rows take the argmax; the rows of a sampled request
     draw from that request's own generator (seeded by its ``seed``), in its own row order, so a
     request's samples do not depend on who else is in the batch.
  3. **leave**: rows that drew EOS, completed a stop string or reached their ``max_tokens`` drop out
     (``batch_select_indices``); a request whose rows are all done is answered at once; a request
     whose client left is dropped. Columns left of every row's first token are cut (once there are
     ``TRIM`` of them), so a server that is never idle does not grow its cache without bound.

The step runs on the rows' own engine while they all share one (the base, or one weight-side
adapter), else on the mixer's mixed engine (``serve.mixed``: per-row adapters; the base's slot 0
adds exact zeros; prompt-type adapters always go there: their prefill is the mixed engine's). Only for families
whose attention is plain and global (``families.plain_attention``, no sliding window), where a
left-padded, masked cache is exact; other models keep the grouped path of ``scheduler``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from adaptlab.engine import decoding
from adaptlab.engine.shared_prefix import RoomyLayer
from adaptlab.families import family

TRIM = 32          # cut the cache's dead left columns once there are this many


def supported(lm) -> bool:
    """Whether ``lm``'s rows may sit left-padded in one shared cache (plain, global attention)."""
    cfg = getattr(getattr(lm, "model", None), "config", None)
    fam = family(getattr(cfg, "model_type", None))
    return fam is not None and fam.plain_attention and not getattr(cfg, "sliding_window", None)


class _Request:
    """One generate job in the batch: its sampling settings, generator and finished texts."""

    def __init__(self, job, n: int, temperature: float, top_p: float, stop, seed):
        self.job, self.n = job, n
        self.temperature, self.top_p, self.stop = temperature, top_p, [s for s in stop if s]
        self.gen = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
        self.out: list[list] = [[None] * n for _ in job.rows]          # (text, finish reason)
        self.left = len(job.rows) * n
        self.failed = False
        self.lm = job.lm                                               # its own engine: EOS ids, cost

    def gone(self) -> bool:
        return self.failed or self.job.gone.is_set() or self.job.future.done()


class _Row:
    __slots__ = ("req", "p", "j", "slot", "toks", "max_new")

    def __init__(self, req, p, j, slot, max_new):
        self.req, self.p, self.j, self.slot, self.max_new = req, p, j, slot, max_new
        self.toks: list[int] = []


class Batch:
    """The rows decoding now, their cache and the engines they run on."""

    def __init__(self, mixer):
        self.mixer = mixer
        self.rows: list[_Row] = []
        self.cache = self.mask = self.pos = self.last = None      # DynamicCache, [B, T], [B, 1], [B, V]
        self.config = None
        self._set_on = None          # the mixed engine whose row slots match self.rows

    def __len__(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------------ join
    def join(self, jobs: list) -> None:
        """Prefill ``jobs`` (generate jobs of mixable engines) in one forward and add their rows."""
        lms = list(dict.fromkeys([r.req.lm for r in self.rows] + [j.lm for j in jobs]))
        if len(lms) == 1 and _own(lms[0]):
            eng, slot_of = lms[0], {lms[0]: 0}
        else:
            mixed, slots = self.mixer.engine(lms)
            eng, slot_of = mixed, dict(zip(lms, slots))
            for r in self.rows:
                r.slot = slot_of[r.req.lm]
        slots = [slot_of[j.lm] for j in jobs]
        seqs, rows, expand = [], [], []
        for job, slot in zip(jobs, slots):
            n, max_tokens, temperature, top_p, stop, seed = job.params
            req = _Request(job, n, temperature, top_p, stop, seed)
            enc = [eng._fit_context(eng.encode(p), 1) for p in job.rows]
            job.lm.cost.calls += len(enc) * n
            for k in sorted(range(len(enc)), key=lambda k: -len(enc[k])):   # generate()'s row order
                max_new = min(max_tokens, max(1, eng.max_length - len(enc[k])))
                expand += [len(seqs)] * n
                seqs.append(enc[k])
                rows += [_Row(req, k, j, slot, max_new) for j in range(n)]
        if eng is self.mixer.lm:
            eng.rows.set(torch.tensor([slot for job, slot in zip(jobs, slots) for _ in job.rows], device=eng.device))
            self._set_on = None
        P = 0 if eng is self.mixer.lm else eng._split_prefix(seqs)    # the mixed engine has none
        if P:            # a shared prompt prefix: computed once (and kept: LocalLM._prefix_kv)
            kw = eng._batch_inputs([s[P:] for s in seqs], seqs[0][:P], room=0, share=False)
        else:
            kw = eng._batch_inputs(seqs, [], room=0)
        out = eng._forward(**kw, logits_to_keep=1)
        sel = torch.tensor(expand, device=eng.device)
        layers = [(layer.keys.index_select(0, sel), layer.values.index_select(0, sel))   # [B2, H, T2, d]
                  for layer in out.past_key_values.layers]
        mask = kw["attention_mask"].to(eng.device).index_select(0, sel)
        pos = kw["position_ids"][:, -1:].index_select(0, sel)
        last = out.logits[:, -1, :].index_select(0, sel)
        if self.rows:
            T1, T2 = self.mask.shape[1], mask.shape[1]
            T = max(T1, T2)
            old = [(layer.keys, layer.values) for layer in self.cache.layers]
            layers = [(torch.cat([_lpad(k1, T), _lpad(k2, T)]), torch.cat([_lpad(v1, T), _lpad(v2, T)]))
                      for (k1, v1), (k2, v2) in zip(old, layers)]
            mask = torch.cat([F.pad(self.mask, (T - T1, 0)), F.pad(mask, (T - T2, 0))])
            pos, last = torch.cat([self.pos, pos]), torch.cat([self.last, last])
            rows = self.rows + rows
        self.rows, self.mask, self.pos, self.last = rows, mask, pos, last
        self.config = eng.model.config
        self._rebuild(layers)

    def _rebuild(self, layers) -> None:
        room = max(r.max_new - len(r.toks) for r in self.rows)
        self.cache = DynamicCache(config=self.config)
        self.cache.layers = [RoomyLayer(k, v, room) for k, v in layers]
        self._set_on = None

    # ------------------------------------------------------------------ step
    def _engine(self):
        """The rows' own engine while they all share one (the base or a weight-side adapter, whose
        cache holds nothing but the rows' tokens), else the mixed engine with the rows' slots."""
        lm = self.rows[0].req.lm
        if _own(lm) and all(r.req.lm is lm for r in self.rows):
            return lm
        eng = self.mixer.lm
        if self._set_on is not eng:
            eng.rows.set(torch.tensor([r.slot for r in self.rows], device=eng.device))
            self._set_on = eng
        return eng

    @torch.no_grad()
    def step(self) -> None:
        """Draw one token per row, let finished rows leave, then one decode forward for the rest."""
        nxt = self.last.argmax(-1)
        by_req: dict = {}
        for i, r in enumerate(self.rows):
            if r.req.temperature > 0:
                by_req.setdefault(r.req, []).append(i)
        for req, idx in by_req.items():
            t = torch.tensor(idx, device=nxt.device)
            nxt[t] = decoding.sample(self.last[t], req.temperature, req.top_p, req.gen).to(nxt.device)
        nxt = nxt.tolist()
        tok = self.rows[0].req.lm.tok
        keep = []
        for i, r in enumerate(self.rows):
            req = r.req
            if req.gone():
                continue
            t = nxt[i]
            if t in req.lm.eos_ids:
                self._finish(r, "eos", tok)
                continue
            r.toks.append(t)
            req.lm.cost.generated_tokens += 1
            if req.job.on_token is not None:
                try:
                    req.job.on_token(r.p, r.j, t)
                except Exception as e:                   # the client's callback broke: fail that request
                    req.failed = True
                    req.job.future.set_exception(e)
                    continue
            if req.stop and any(s in tok.decode(r.toks, skip_special_tokens=True) for s in req.stop):
                self._finish(r, "stop", tok)
            elif len(r.toks) >= r.max_new:
                self._finish(r, "length", tok)
            else:
                keep.append(i)
        for r in self.rows:                              # requests whose client left: their futures
            req = r.req
            if req.job.gone.is_set() and not req.job.future.done():
                req.job.future.cancel() or req.job.future.set_exception(ConnectionAbortedError("client gone"))
        self._keep(keep)
        if not self.rows:
            return
        eng = self._engine()
        ids = torch.tensor([[r.toks[-1]] for r in self.rows], device=eng.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], 1)
        self.pos = self.pos + 1
        self.cache, self.last = eng._decode(input_ids=ids, attention_mask=self.mask, position_ids=self.pos,
                                            past_key_values=self.cache, use_cache=True, shared_prefix=None)
        eng.cost.forwards += 1

    def _finish(self, r: _Row, why: str, tok) -> None:
        req = r.req
        text = tok.decode(r.toks, skip_special_tokens=True)
        hits = [(text.find(s), s) for s in req.stop if s in text]
        if hits:
            cut, first = min(hits)
            text, why = text[:cut], first
        req.out[r.p][r.j] = (text, why)
        req.left -= 1
        if req.left == 0 and not req.job.future.done():
            req.job.future.set_result(req.out)

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask, self.pos, self.last = [], None, None, None, None
            return
        sel = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        self.mask, self.pos, self.last = self.mask[sel], self.pos[sel], self.last[sel]
        self.rows = [self.rows[i] for i in keep]
        self._set_on = None
        used = self.mask.any(0).nonzero()
        c = int(used[0]) if len(used) else 0
        if c >= TRIM:                                    # columns no row attends to any more
            layers = [(layer.keys[:, :, c:], layer.values[:, :, c:]) for layer in self.cache.layers]
            self.mask = self.mask[:, c:]
            self._rebuild(layers)

    def fail(self, e: Exception) -> None:
        """Hand ``e`` to every request in the batch and empty it (the worker lives on)."""
        for r in self.rows:
            if not r.req.job.future.done():
                r.req.job.future.set_exception(e)
        self.rows, self.cache, self.mask, self.pos, self.last = [], None, None, None, None


def _own(lm) -> bool:
    """Rows of ``lm`` alone may decode on ``lm`` itself: no soft prompt or prefix of its own."""
    return getattr(lm.model, "prompt", None) is None


def _lpad(t: torch.Tensor, T: int) -> torch.Tensor:
    """[B, H, t, d] -> [B, H, T, d], zeros on the left."""
    return F.pad(t, (0, 0, T - t.shape[2], 0))
