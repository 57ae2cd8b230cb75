"""ONE text path: how a string becomes the token ids a model sees, for training, the engine and
the heads alike, so a model is trained on inputs cut exactly as it is scored on.

    encode(tok, text)                      ids; special tokens unless the text already starts with BOS
    encode_pair(tok, context, target)      (context ids, target ids) such that context + target
                                           tokenizes like the whole text; the context's trailing
                                           whitespace moves to the target (lm-evaluation-harness's rule)
    chat(tok, text)                        the text as one user turn of the tokenizer's chat template
                                           (with the generation prompt), or the text unchanged
    prompt(task, tok, example)             the zero-shot prompt: the task's template, chat-wrapped
                                           when the task asks (``task.chat``)
    fit_context(ids, n_target, L, side)    the context cut so that context + n_target <= L tokens,
                                           from the ``side`` the task names (``task.truncate``:
                                           ``left`` keeps the end, ``right`` keeps the start); the
                                           target keeps at most L - 1 tokens, the context at least one
    encode_lm(tok, context, target, L, side, add_eos)    (ids, n_target) of a training row: the
                                           context fitted as above, then the target (+ EOS)
    encode_input(tok, text, L, side, kind) the ids of a classifier's input: an encoder keeps its
                                           special tokens ([CLS] ... [SEP]) around the fitted body,
                                           a decoder is ``encode`` fitted

The engine's scoring row for (context, option) is ``encode_lm(...)`` without its last token, so
training featurisation and ``adaptlab eval`` feed the model the same ids (``tests/test_text.py``).
"""

from __future__ import annotations

SIDES = ("left", "right")


def encode(tok, text: str) -> list[int]:
    bos = tok.bos_token
    ids = tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
    if not ids:  # an empty context still needs something to predict from
        ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    return ids


def encode_pair(tok, context: str, target: str) -> tuple[list[int], list[int]]:
    n = len(context) - len(context.rstrip())
    if n:
        context, target = context[:-n], context[-n:] + target
    ctx = encode(tok, context)
    whole = encode(tok, context + target)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tok(target, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]


def chat(tok, text: str) -> str:
    if not getattr(tok, "chat_template", None):
        return text
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def prompt(task, tok, example: dict) -> str:
    text = task.render(example)
    return chat(tok, text) if task.chat else text


def fit_context(ids: list[int], n_target: int, max_len: int, side: str = "left") -> list[int]:
    """``ids`` cut to ``max_len - n_target`` tokens (at least 1) from ``side``."""
    if side not in SIDES:
        raise ValueError(f"truncate side {side!r}: must be left or right")
    room = max(1, max_len - min(n_target, max_len - 1))
    if len(ids) <= room:
        return ids
    return ids[-room:] if side == "left" else ids[:room]


def encode_lm(tok, context: str, target: str, max_len: int, side: str = "left",
              add_eos: bool = False) -> tuple[list[int], int]:
    ctx, cont = encode_pair(tok, context, target)
    if add_eos and tok.eos_token_id is not None:
        cont = cont + [tok.eos_token_id]
    cont = cont[: max_len - 1]
    return fit_context(ctx, len(cont), max_len, side) + cont, len(cont)


def special_frame(tok) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text ([CLS] and [SEP] for
    BERT, <s> and </s> for RoBERTa, BOS for Llama), found by tokenizing a probe with and without them."""
    with_sp = tok("a")["input_ids"]
    body = tok("a", add_special_tokens=False)["input_ids"]
    for i in range(len(with_sp) - len(body) + 1):
        if with_sp[i: i + len(body)] == body:
            return with_sp[:i], with_sp[i + len(body):]
    return [], []


def encode_input(tok, text: str, max_len: int, side: str = "left", kind: str = "decoder") -> list[int]:
    if kind == "decoder":
        return fit_context(encode(tok, text), 0, max_len, side)
    ids = tok(text)["input_ids"]
    if len(ids) <= max_len:
        return ids
    lead, trail = special_frame(tok)
    body = ids[len(lead): len(ids) - len(trail)]
    return ids[: len(lead)] + fit_context(body, 0, max_len - len(lead) - len(trail), side) + ids[len(ids) - len(trail):]
