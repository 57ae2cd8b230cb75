"""Objectives: what the one training loop minimises. An objective turns examples into features,
features into a batch, and a batch into a loss (and metrics) on the model being trained:

    featurize(examples) -> [feature dict with "ids", ...]     once, before training
    collate(features)   -> {name: tensor}                      per micro-batch (may draw random numbers:
                                                                the masking of MLM; the loop's RNG is checkpointed)
    loss(model, batch)  -> (loss, {metric: tensor})            inside the loop's forward (DDP, autocast)

An objective is an ``nn.Module``: parameters it owns (an MLM head) train with the model's and are
checkpointed with them. Adding an objective (instruction SFT, DPO, a reward model) is adding a
class here; the loop does not change.

* ``LMTarget`` (a decoder without a head): L = -sum_t log P(y_t | prompt, y_<t) over the target
  tokens only; prompt = the task's rendered template (what ``adaptlab eval --prompt zero-shot``
  sends), y = ``task.target_text(ex)`` (+ EOS for qa). Logits only at the target positions (the
  LM head on [N_targets, H], not [B, L, V]).
* ``HeadCE`` (a classification head: every encoder, ``head`` on a decoder): cross-entropy of the
  head's label logits.
* ``MaskedLM`` (encoders; Devlin et al. 2019): 15% of the real tokens are chosen (never a special
  token or padding); of those 80% become [MASK], 10% a random token, 10% stay; the loss is the
  cross-entropy of the MLM head at the chosen positions. The masking is transformers'
  ``DataCollatorForLanguageModeling``.
* ``CausalLM`` (decoders; Radford et al. 2018): L = -sum_t log P(x_t | x_<t) over every real token.

Two objectives serve the gradient-free methods (``tuning/bbt.py``, ``bbtv2.py``, ``bdpl.py``) and
return one loss per *candidate* of a population, [P], not a scalar:

* ``Verbalizer`` (BBT, Sun et al. 2022): the LM head at the last position read over the first
  token of every label word, L = CE(softmax(s_y over the label words), gold) or the multi-class
  hinge max(0, 1 + max_{j != gold} s_j - s_gold). The P candidates x B rows go through the model
  as P*B rows (``max_rows`` rows a forward), each row with its candidate's prompt
  (``prompt.row_candidates``); the rows are cut exactly as ``adaptlab eval`` scores them.
* ``ScoreLoss`` (BDPL, Diao et al. 2022): the same CE, but the model is reached only through the
  LM interface's ``score`` (any engine): each of the I sampled prompt texts is placed before the
  task's template, as an instruction, and the I*B contexts go to one ``score`` call.

Both pretraining objectives take plain text: each text is tokenized whole and cut into pieces of
at most ``max_len`` tokens (nothing is dropped), as continued pretraining on in-domain text
(Gururangan et al. 2020, "Don't Stop Pretraining") does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptlab import text as text_path
from adaptlab.errors import ConfigError


def pad_ids(feats: list[dict], pad_id: int, key: str = "ids") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``feats[i][key]`` to the longest row: (ids [B, L], attention mask [B, L])."""
    B, L = len(feats), max(len(f[key]) for f in feats)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for i, f in enumerate(feats):
        ids[i, : len(f[key])] = torch.tensor(f[key])
        mask[i, : len(f[key])] = 1
    return ids, mask


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0


class Objective(nn.Module):
    name = "objective"

    def featurize(self, examples: list) -> list[dict]:
        raise NotImplementedError

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    @staticmethod
    def length(feat: dict) -> int:
        """Real tokens of one feature (length bucketing, tokens seen)."""
        return len(feat["ids"])


# --------------------------------------------------------------------------- task objectives


class LMTarget(Objective):
    name = "lm-target"

    def __init__(self, tokenizer, task, max_len: int):
        super().__init__()
        self.tok, self.task, self.max_len = tokenizer, task, max_len

    def featurize(self, examples: list[dict]) -> list[dict]:
        feats = []
        for ex in examples:
            ids, n = text_path.encode_lm(self.tok, text_path.prompt(self.task, self.tok, ex), self.task.target_text(ex),
                                         self.max_len, self.task.truncate, add_eos=self.task.schema == "qa")
            feats.append({"ids": ids, "n_target": n})
        return feats

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        return target_collate(feats, self.tok)

    def loss(self, model, batch):
        return target_loss(model, batch)


def target_collate(feats: list[dict], tok) -> dict[str, torch.Tensor]:
    """Rows whose last ``n_target`` tokens are the target: labels -100 everywhere else."""
    ids, mask = pad_ids(feats, _pad_id(tok))
    labels = torch.full_like(ids, -100)
    for i, f in enumerate(feats):
        n, t = f["n_target"], len(f["ids"])
        labels[i, t - n: t] = ids[i, t - n: t]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_loss(model, batch):
    """Mean next-token cross-entropy over the target tokens of the batch (LM head on those only)."""
    h = model.body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])   # [B, L, H]
    tgt = batch["labels"][:, 1:]                                          # [B, L-1]: position t predicts t+1
    sel = tgt != -100
    logits = model.lm_head(h[:, :-1][sel])                                # [N, V]
    y = tgt[sel]
    return F.cross_entropy(logits.float(), y), {"token_accuracy": (logits.argmax(-1) == y).float().mean()}


class HeadCE(Objective):
    name = "head-ce"

    def __init__(self, tokenizer, task, max_len: int, kind: str):
        super().__init__()
        self.tok, self.task, self.max_len, self.kind = tokenizer, task, max_len, kind

    def featurize(self, examples: list[dict]) -> list[dict]:
        return [{"ids": text_path.encode_input(self.tok, text_path.prompt(self.task, self.tok, ex), self.max_len,
                                               self.task.truncate, self.kind),
                 "label": self.task.gold_index(ex)} for ex in examples]

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_ids(feats, _pad_id(self.tok))
        return {"input_ids": ids, "attention_mask": mask, "label": torch.tensor([f["label"] for f in feats])}

    def loss(self, model, batch):
        logits = model.classify(batch["input_ids"], batch["attention_mask"])          # [B, C]
        return F.cross_entropy(logits.float(), batch["label"]), {
            "accuracy": (logits.argmax(-1) == batch["label"]).float().mean()}


def for_task(tuned, tokenizer, task, max_len: int) -> Objective:
    """The objective a tuned model is trained with on a labelled task: chosen by the model (a head
    or not), never by the method."""
    if tuned.head is not None:
        return HeadCE(tokenizer, task, max_len, tuned.kind)
    return LMTarget(tokenizer, task, max_len)


# --------------------------------------------------------------------------- pretraining objectives


def chunk_texts(tok, texts: list[str], max_len: int, kind: str) -> list[dict]:
    """Every text tokenized whole and cut into pieces that fit ``max_len`` with the model's
    special tokens (an encoder's [CLS] ... [SEP]; a decoder's BOS first, EOS after the text)."""
    feats = []
    if kind == "encoder":
        lead, trail = text_path.special_frame(tok)
        room = max_len - len(lead) - len(trail)
        for t in texts:
            body = tok(t, add_special_tokens=False)["input_ids"]
            for s in range(0, len(body), room):
                feats.append({"ids": lead + body[s: s + room] + trail})
        return feats
    for t in texts:
        ids = text_path.encode(tok, t) + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
        for s in range(0, len(ids), max_len):
            piece = ids[s: s + max_len]
            if len(piece) >= 2:                                     # at least one next-token target
                feats.append({"ids": piece})
    return feats


class MaskedLM(Objective):
    name = "mlm"

    def __init__(self, tokenizer, head: nn.Module, max_len: int, mlm_probability: float = 0.15,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1):
        super().__init__()
        from transformers import DataCollatorForLanguageModeling

        if tokenizer.mask_token is None:
            raise ConfigError("masked-LM pretraining needs a tokenizer with a mask token (an encoder's [MASK])")
        self.tok, self.max_len = tokenizer, max_len
        self.head = head                                            # hidden states [.., H] -> logits [.., V]
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability,
                                                      mask_replace_prob=mask_replace_prob,
                                                      random_replace_prob=random_replace_prob, return_tensors="pt")

    def featurize(self, texts: list[str]) -> list[dict]:
        return chunk_texts(self.tok, texts, self.max_len, "encoder")

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_ids(feats, _pad_id(self.tok))
        special = torch.tensor([self.tok.get_special_tokens_mask(f["ids"], already_has_special_tokens=True)
                                + [1] * (ids.shape[1] - len(f["ids"])) for f in feats], dtype=torch.bool)
        inputs, labels = self.masker.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
        return {"input_ids": inputs, "attention_mask": mask, "labels": labels}

    def loss(self, model, batch):
        h = model.body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])    # [B, L, H]
        sel = batch["labels"] != -100
        y = batch["labels"][sel]
        if y.numel() == 0:                                          # nothing chosen in this batch (tiny rows)
            return h.sum() * 0.0, {"mlm_accuracy": torch.tensor(0.0)}
        logits = self.head(h[sel])                                  # [N, V]
        return F.cross_entropy(logits.float(), y), {"mlm_accuracy": (logits.argmax(-1) == y).float().mean()}


class CausalLM(Objective):
    name = "clm"

    def __init__(self, tokenizer, max_len: int):
        super().__init__()
        self.tok, self.max_len = tokenizer, max_len

    def featurize(self, texts: list[str]) -> list[dict]:
        return chunk_texts(self.tok, texts, self.max_len, "decoder")

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_ids(feats, _pad_id(self.tok))
        return {"input_ids": ids, "attention_mask": mask}

    def loss(self, model, batch):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        h = model.body(input_ids=ids, attention_mask=mask)                   # [B, L, H]
        sel = mask[:, 1:].bool()                                             # position t predicts t+1
        logits = model.lm_head(h[:, :-1][sel])                               # [N, V]
        y = ids[:, 1:][sel]
        return F.cross_entropy(logits.float(), y), {"token_accuracy": (logits.argmax(-1) == y).float().mean()}


# --------------------------------------------------------------------------- gradient-free objectives


def _label_losses(s: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row loss of label scores ``s`` [R, C] against gold ``y`` [R]: CE or multi-class hinge."""
    if kind == "hinge":
        gold = s.gather(1, y[:, None])                                       # [R, 1]
        other = s.masked_fill(F.one_hot(y, s.shape[1]).bool(), float("-inf")).max(1, keepdim=True).values
        return (1.0 + other - gold).clamp(min=0).squeeze(1)
    return F.cross_entropy(s, y, reduction="none")


class Verbalizer(Objective):
    name = "verbalizer"

    def __init__(self, tokenizer, task, max_len: int, loss: str = "ce"):
        super().__init__()
        if not task.is_classification:
            raise ConfigError(f"task {task.name} is {task.schema}: a verbalizer objective needs a classification task")
        self.tok, self.task, self.max_len, self.kind = tokenizer, task, max_len, loss

    def featurize(self, examples: list[dict]) -> list[dict]:
        feats = []
        for ex in examples:
            ctx = text_path.prompt(self.task, self.tok, ex)
            pairs = [text_path.encode_pair(self.tok, ctx, o) for o in self.task.options(ex)]
            first = [c[0] for _, c in pairs]
            if len(set(first)) < len(first):
                raise ConfigError(f"task {self.task.name}: two label words start with the same token; the verbalizer "
                                  "objective reads one token per label")
            ids = text_path.fit_context(pairs[0][0], 1, self.max_len, self.task.truncate)
            feats.append({"ids": ids, "options": first, "label": self.task.gold_index(ex)})
        return feats

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_ids(feats, _pad_id(self.tok))
        return {"input_ids": ids, "attention_mask": mask, "options": torch.tensor([f["options"] for f in feats]),
                "label": torch.tensor([f["label"] for f in feats])}

    def loss(self, model, batch):
        ids, mask, opts, y = batch["input_ids"], batch["attention_mask"], batch["options"], batch["label"]
        prompt = model.prompt
        P = prompt.population_size if prompt is not None else 1
        B = ids.shape[0]
        cand = torch.arange(P, device=ids.device).repeat_interleave(B)       # [P*B]: row -> candidate (candidate-major)
        ids, mask, opts, y = ids.repeat(P, 1), mask.repeat(P, 1), opts.repeat(P, 1), y.repeat(P)   # [P*B, ...]
        step = getattr(prompt, "max_rows", None) or P * B
        scores = []
        for s in range(0, P * B, step):
            e = min(P * B, s + step)
            if prompt is not None:
                prompt.row_candidates = cand[s:e]
            try:
                h = model.body(input_ids=ids[s:e], attention_mask=mask[s:e])          # [r, L, H]
            finally:
                if prompt is not None:
                    prompt.row_candidates = None
            last = mask[s:e].sum(1) - 1                                              # right-padded: last real token
            z = model.lm_head(h[torch.arange(e - s, device=h.device), last])         # [r, V]
            scores.append(z.float().gather(1, opts[s:e]))                            # [r, C]
        sc = torch.cat(scores)                                                       # [P*B, C]
        losses = _label_losses(sc, y, self.kind).view(P, B).mean(1)                  # [P]
        acc = (sc.argmax(1) == y).float().view(P, B).mean(1)                         # [P]
        return losses, {"accuracy": acc.mean(), "best_accuracy": acc.max()}


class ScoreLoss(Objective):
    name = "score"

    def __init__(self, lm, task, loss: str = "ce"):
        super().__init__()
        if task.schema == "qa":
            raise ConfigError(f"task {task.name} is qa: a score objective needs options to score")
        self.lm, self.task, self.kind = lm, task, loss
        self.examples: list[dict] = []

    def featurize(self, examples: list[dict]) -> list[dict]:
        self.examples = list(examples)
        return [{"i": k, "n": len(self.task.render(ex).split())} for k, ex in enumerate(self.examples)]

    def length(self, feat: dict) -> int:
        return feat["n"]

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor([f["i"] for f in feats])}

    def render(self, text: str, ex: dict) -> str:
        from adaptlab.prompting.zero_shot import Instruction

        return Instruction(text=text).render(self.task, ex, self.lm)

    def loss(self, model, batch):
        exs = [self.examples[int(i)] for i in batch["index"]]
        prompt = model.prompt
        texts = prompt.population_texts()                                            # I prompt texts
        contexts = [self.render(t, ex) for t in texts for ex in exs]                 # [I*B], prompt-major
        options = [self.task.options(ex) for _ in texts for ex in exs]
        before = (self.lm.cost.calls, self.lm.cost.forwards)
        scored = self.lm.score(contexts, options)
        prompt.last_cost = (self.lm.cost.calls - before[0], self.lm.cost.forwards - before[1])
        y = torch.tensor([self.task.gold_index(ex) for _ in texts for ex in exs])
        C = max(len(o) for o in options)
        s = torch.full((len(contexts), C), float("-inf"))
        for r, sc in enumerate(scored):
            s[r, : len(sc)] = torch.tensor([o.logprob for o in sc])
        I, B = len(texts), len(exs)
        losses = _label_losses(s, y, self.kind).view(I, B).mean(1)                   # [I]
        acc = (s.argmax(1) == y).float().view(I, B).mean(1)
        return losses, {"accuracy": acc.mean(), "best_accuracy": acc.max()}
