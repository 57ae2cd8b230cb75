"""One worker thread runs every model call; requests wait in a bounded queue.

Continuous batching (``serve.continuous``, the default where the model allows it): generate
requests for the base and every adapter that mixes per row join one running decode loop between
its steps and leave it as they finish; a request never waits for another to finish. Everything
else is batched in groups, run between decode steps:

Grouped batching: the worker takes the oldest job, then every queued job that can share its forward
passes -- same engine (adapter) and, for generation, the same sampling parameters -- up to
``max_batch`` prompts, and runs them as one ``LocalLM.generate`` (shared prompt prefixes are
computed once there) or one scoring forward. Generation jobs for the weight-side adapter types
(LoRA, IA3, bottleneck adapters), the prompt-type ones (prefix, prompt tuning, P-tuning, P-tuning
v2) and the base share one decode loop: rows of one forward use different adapters
(``serve.mixed``, which lists what does not mix). Other jobs (adapters that do not mix, prompt
log-probs) run in turn, one group per adapter. A full queue refuses at once (``QueueFull`` -> 429 + Retry-After); a cancelled
job (client gone) is skipped when its turn comes.

Streaming: a job with ``on_token`` gets ``(row, sample, token_id)`` from inside the decode loop
(``LocalLM.generate(on_token=)``), on the worker thread, as each token is drawn. A streaming
client that goes away marks its job ``gone``; once every job of the running group is gone the
decode loop is stopped at its next token, so the slot is free at once.

Prompt log-probs (``echo`` + ``logprobs``) come from one left-padded forward over the prompt:
``log p(x_i | x_<i)`` for every token after the first, and the top-k alternatives.
"""

from __future__ import annotations

import bisect
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from adaptlab.serve import continuous as cb
from adaptlab.serve.mixed import Mixer


class QueueFull(Exception):
    pass


@dataclass
class Job:
    kind: str                         # "generate" | "logprobs"
    lm: object                        # the engine (an adapter's LocalLM)
    rows: list                        # generate: prompt strings; logprobs: token-id lists
    params: tuple = ()                # generate: (n, max_tokens, temperature, top_p, stop, seed); logprobs: (top_k,)
    future: Future = field(default_factory=Future)
    on_token: object = None           # generate only: callable(row, sample, token_id), from the worker thread
    gone: threading.Event = field(default_factory=threading.Event)   # the client left (streaming)


class _AllGone(Exception):
    """Raised inside the decode loop when no job of the group has a client any more."""


class Scheduler:
    def __init__(self, max_queue: int, max_batch: int, continuous: bool = True):
        self.q: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.max_batch = max_batch
        self.continuous = continuous
        self._held: list[Job] = []    # taken from the queue, not yet run (other adapter / params)
        self._stop = threading.Event()
        self.mixer = Mixer()          # generate jobs of mixable adapters share a forward (serve.mixed)
        self.batch = cb.Batch(self.mixer)     # the running decode loop (serve.continuous)
        self._joins: dict = {}        # engine -> whether its generate jobs join the running batch
        self.busy = 0
        self.thread = threading.Thread(target=self._loop, name="adaptlab-serve", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        try:
            self.q.put_nowait(job)
        except queue.Full:
            raise QueueFull() from None
        return job.future

    def pending(self) -> int:
        """Requests waiting to start (queued, or taken but not yet run)."""
        return self.q.qsize() + len(self._held)

    def running(self) -> int:
        """Rows decoding in the running batch, or jobs of the group now running."""
        return len(self.batch) or self.busy

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    # ------------------------------------------------------------------ worker
    def _pull(self, block: bool) -> None:
        """Everything queued now joins the pool we pick from (waiting briefly when idle)."""
        if block and not self._held:
            try:
                self._held.append(self.q.get(timeout=0.05))
            except queue.Empty:
                return
        while True:
            try:
                self._held.append(self.q.get_nowait())
            except queue.Empty:
                break
        self._held = [j for j in self._held if not j.future.cancelled() and not j.gone.is_set()]

    def _joinable(self, j: Job) -> bool:
        if not self.continuous or j.kind != "generate":
            return False
        if j.lm not in self._joins:
            self._joins[j.lm] = self.mixer.mixable(j.lm) and cb.supported(j.lm)
        return self._joins[j.lm]

    def _admit(self) -> None:
        """Waiting generate jobs that fit join the running batch, in one prefill."""
        room = self.max_batch - len(self.batch)
        join, rest = [], []
        for j in self._held:
            rows = len(j.rows) * j.params[0]
            if self._joinable(j) and (rows <= room or not join and not len(self.batch)):
                if j.future.set_running_or_notify_cancel():
                    join.append(j)
                    room -= rows
            else:
                rest.append(j)
        self._held = rest
        if not join:
            return
        try:
            self.batch.join(join)
        except Exception as e:        # handed to the requests; the running rows go on
            for j in join:
                if not j.future.done():
                    j.future.set_exception(e)

    def _take(self) -> list[Job]:
        """One group of the jobs that do not join the running batch (``_admit`` takes those)."""
        held = [j for j in self._held if not self._joinable(j)]
        if not held:
            return []
        first = held[0]
        group, rest, n = [], [], 0
        for j in held:
            if ((j.lm is first.lm or self._mix(first, j)) and j.kind == first.kind and j.params == first.params
                    and (not group or n + len(j.rows) <= self.max_batch)):
                group.append(j)
                n += len(j.rows)
            else:
                rest.append(j)
        taken = set(map(id, group))
        self._held = [j for j in self._held if id(j) not in taken]
        return group

    def _mix(self, a: Job, b: Job) -> bool:
        """Jobs of two adapters share a decode loop (kind and params are checked by ``_take``)."""
        return a.kind == "generate" and self.mixer.mixable(a.lm) and self.mixer.mixable(b.lm)

    def _engine(self, group: list[Job]):
        """The group's engine: its adapter's, or for several adapters the mixed engine with each
        prompt's adapter slot bound (one decode loop, serve.mixed)."""
        lm = group[0].lm
        if all(j.lm is lm for j in group):
            return lm
        mixed, slots = self.mixer.engine([j.lm for j in group])
        return mixed.bind([s for j, s in zip(group, slots) for _ in j.rows])

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._pull(block=not len(self.batch))
            self._admit()
            group = self._take()
            if group:
                self._run_group(group)
            if len(self.batch):
                self.busy = len(self.batch)
                try:
                    self.batch.step()
                except Exception as e:    # handed to the requests; the worker lives on
                    self.batch.fail(e)
                self.busy = 0

    def _run_group(self, group: list[Job]) -> None:
        self.busy = len(group)
        group = [j for j in group if j.future.set_running_or_notify_cancel()]
        if not group:
            self.busy = 0
            return
        try:
            rows = [r for j in group for r in j.rows]
            out = self._run(group, rows)
            k = 0
            for j in group:
                j.future.set_result(out[k:k + len(j.rows)])
                k += len(j.rows)
        except _AllGone:          # every client left mid-stream: nothing to hand back
            for j in group:
                if not j.future.done():
                    j.future.cancel() or j.future.set_exception(ConnectionAbortedError("client gone"))
        except Exception as e:    # handed to the request; the worker lives on
            for j in group:
                if not j.future.done():
                    j.future.set_exception(e)
        finally:
            self.busy = 0

    def _run(self, group: list[Job], rows: list) -> list:
        job = group[0]
        lm = job.lm
        if job.kind == "generate":
            lm = self._engine(group)
            n, max_tokens, temperature, top_p, stop, seed = job.params
            kw = {}
            if any(j.on_token is not None for j in group) and _takes_on_token(lm):
                kw["on_token"] = _fan_out(group)
            texts = lm.generate(rows, n=n, max_new_tokens=max_tokens, temperature=temperature,
                                stop=list(stop), top_p=top_p, seed=seed, **kw)
            return [list(zip(t, r)) for t, r in zip(texts, lm.finish_reasons)]
        return prompt_logprobs(lm, rows, job.params[0])


def _takes_on_token(lm) -> bool:
    """Whether the engine's ``generate`` streams tokens (``LocalLM``); others (a classifier's
    ``HeadLM`` refuses to generate with its own error) are called without it."""
    import inspect

    return "on_token" in inspect.signature(lm.generate).parameters


def _fan_out(group: list[Job]):
    """One ``on_token`` for the group's concatenated rows: each token goes to its job's callback
    (row numbered within the job); stops the decode loop when every client is gone."""
    starts, k = [], 0
    for j in group:
        starts.append(k)
        k += len(j.rows)

    def cb(row: int, sample: int, token: int) -> None:
        if all(j.gone.is_set() for j in group):
            raise _AllGone()
        g = bisect.bisect_right(starts, row) - 1
        j = group[g]
        if j.on_token is not None and not j.gone.is_set():
            j.on_token(row - starts[g], sample, token)
    return cb


@torch.no_grad()
def prompt_logprobs(lm, rows: list[list[int]], top_k: int = 0) -> list[tuple[list, list]]:
    """For each token-id row: ([None, lp_1 .. lp_{L-1}], [None, {id: lp} top-k per position])."""
    out = []
    for s in range(0, len(rows), lm.batch_size):
        chunk = rows[s: s + lm.batch_size]
        ids, mask = lm._left_pad(chunk)                                       # [B, L], rows at the end
        L = ids.shape[1]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                          position_ids=pos.to(lm.device)).logits.float()
        lp = F.log_softmax(logits, -1)                                        # [B, L, V]
        lm.cost.forwards += 1
        lm.cost.prompt_tokens += int(mask.sum())
        for i, r in enumerate(chunk):
            off = L - len(r)
            tgt = torch.tensor(r[1:], device=lp.device)
            row = lp[i, off:L - 1]                                            # predicts r[1:]
            vals = row.gather(-1, tgt[:, None])[:, 0].tolist() if len(r) > 1 else []
            tops: list = [None]
            if top_k:
                tv, ti = row.topk(min(top_k, row.shape[-1]), -1)
                tops += [dict(zip(a, b)) for a, b in zip(ti.tolist(), tv.tolist())]
            out.append(([None] + vals, tops))
    return out
