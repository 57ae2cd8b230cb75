"""``adaptlab vocab``: subword vocabularies for in-domain text, and extending a model with new tokens.

A pretrained tokenizer splits domain words it never saw into many pieces ("fertility", tokens
per word, goes up), which costs context and spreads a word's meaning over pieces. Two tools:

1. **A new vocabulary** trained on the domain text with the base tokenizer's own algorithm and
   settings (``train_new_from_iterator``: byte-level BPE for the default decoder, WordPiece for
   BERT), and a report: fertility under the base and the new vocabulary, and the most fragmented
   domain words (frequency x (pieces - 1), the tokens a whole-word token would save).
2. **Extending a model** (``--extend N``): the N whole words of the new vocabulary that save the
   most tokens on the text are added to the base tokenizer as whole-word added tokens (an
   encoder's normalised word, a byte-level decoder's " word" with its leading space), and each
   new embedding starts as the mean of its old sub-token embeddings,

       e_new = 1/|pieces(w)| * sum_{p in pieces(w)} E[p]

   (the initialisation of e.g. Hewitt 2021, "Initializing new word embeddings"; Gee et al. 2022,
   "Fast vocabulary transfer"). ``adaptlab tune --vocab DIR`` trains those rows with any method and
   saves them with the adapter in peft's trainable-tokens layout (``tuning/tokens.py``).

The extension folder holds the extended tokenizer's files and ``extension.json`` (the base vocab
size, the added words, their sub-token ids).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from adaptlab.config import atomic_write_json
from adaptlab.errors import ConfigError

EXTENSION = "extension.json"
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]")


def words_of(texts: list[str]) -> Counter:
    """Word frequencies (letters with inner apostrophes and hyphens), case kept."""
    c: Counter = Counter()
    for t in texts:
        c.update(_WORD.findall(t))
    return c


def _byte_level(tok) -> bool:
    return "Ġ" in "".join(tok.convert_ids_to_tokens(tok(" a", add_special_tokens=False)["input_ids"]))


def pieces(tok, word: str) -> list[int]:
    """The ids a word gets inside running text (a byte-level BPE sees its leading space)."""
    text = " " + word if _byte_level(tok) else word
    return tok(text, add_special_tokens=False)["input_ids"]


def fertility(tok, texts: list[str]) -> float:
    """Tokens per whitespace-separated word over ``texts`` (no special tokens)."""
    n_tok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    n_words = sum(len(t.split()) for t in texts)
    return n_tok / max(1, n_words)


def train_vocab(tok, texts: list[str], vocab_size: int):
    """A new tokenizer of the base's kind trained on ``texts``."""
    if vocab_size < 100:
        raise ConfigError(f"vocab_size={vocab_size}: must be at least 100")

    def batches():
        for s in range(0, len(texts), 1000):
            yield texts[s: s + 1000]

    return tok.train_new_from_iterator(batches(), vocab_size=vocab_size)


def fragmented(base, new, counts: Counter, top: int = 20) -> list[dict]:
    """The domain words the base tokenizer splits most, weighted by frequency."""
    rows = []
    for w, f in counts.most_common(5000):
        b = pieces(base, w)
        if len(b) > 1:
            rows.append({"word": w, "count": f, "base_pieces": base.convert_ids_to_tokens(b),
                         "new_pieces": new.convert_ids_to_tokens(pieces(new, w)), "saved": f * (len(b) - 1)})
    rows.sort(key=lambda r: -r["saved"])
    return rows[:top]


def choose_words(base, new, counts: Counter, n: int) -> list[tuple[str, list[int]]]:
    """The ``n`` words the new vocabulary keeps whole that save the most base tokens on the text:
    (word, base sub-token ids), best first."""
    if n > len(new):
        raise ConfigError(f"--extend {n}: larger than the new vocabulary ({len(new)} tokens); choose at most "
                          "that, or a larger --vocab-size")
    lower = bool(base("A", add_special_tokens=False)["input_ids"] == base("a", add_special_tokens=False)["input_ids"])
    merged: Counter = Counter()
    for w, f in counts.items():
        merged[w.lower() if lower else w] += f
    cands = []
    for w, f in merged.items():
        if len(w) < 3 or f < 2:
            continue
        b = pieces(base, w)
        if len(b) > 1 and len(pieces(new, w)) == 1:
            cands.append((f * (len(b) - 1), w, b))
    cands.sort(key=lambda c: (-c[0], c[1]))
    if n > len(cands):
        raise ConfigError(f"--extend {n}: the new vocabulary has only {len(cands)} whole words that the base "
                          "splits (seen at least twice); choose at most that")
    return [(w, b) for _, w, b in cands[:n]]


def extend_tokenizer(base, words: list[str]):
    """A copy of ``base`` with ``words`` as whole-word added tokens."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp())
    try:
        base.save_pretrained(tmp)
        tok = AutoTokenizer.from_pretrained(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if _byte_level(base):
        # the leading space is part of the token, as in the byte-level vocabulary (" word" = "Ġword"); a
        # single_word boundary check would look at the character before that space and never match
        added = [AddedToken(" " + w, single_word=False, normalized=False) for w in words]
    else:
        added = [AddedToken(w, single_word=True, normalized=True) for w in words]
    tok.add_tokens(added)
    return tok


def build(texts: list[str], backbone, vocab_size: int, extend: int | None, out: str) -> dict:
    """Train the vocabulary, write the report (and the extension) to ``out``; returns the report."""
    base = backbone.tokenizer
    new = train_vocab(base, texts, vocab_size)
    counts = words_of(texts)
    sample = texts[:20000]
    report = {"texts": len(texts), "words": sum(counts.values()), "distinct_words": len(counts),
              "base_vocab": len(base), "new_vocab": len(new),
              "fertility": {"base": round(fertility(base, sample), 4), "new": round(fertility(new, sample), 4)},
              "most_fragmented": fragmented(base, new, counts)}
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    new.save_pretrained(outp / "new_tokenizer")
    if extend:
        chosen = choose_words(base, new, counts, extend)
        ext = extend_tokenizer(base, [w for w, _ in chosen])
        n0 = backbone.model.get_input_embeddings().weight.shape[0]
        if len(base) > n0:
            raise ConfigError(f"the tokenizer has {len(base)} tokens but the model only {n0} embeddings")
        report["fertility"]["extended"] = round(fertility(ext, sample), 4)
        report["added"] = [w for w, _ in chosen]
        ext.save_pretrained(outp)
        atomic_write_json(outp / EXTENSION, {"base": backbone.name, "base_vocab": n0, "tokenizer_size": len(base),
                                             "tokens": [w for w, _ in chosen], "init": [b for _, b in chosen],
                                             "ids": ext.convert_tokens_to_ids(
                                                 [(" " + w) if _byte_level(base) else w for w, _ in chosen])})
    atomic_write_json(outp / "vocab_report.json", report)
    return report


def read_extension(folder) -> dict:
    """The extension spec of ``adaptlab vocab --extend`` (checked)."""
    import json

    p = Path(folder) / EXTENSION
    if not p.exists():
        raise ConfigError(f"{folder}: no {EXTENSION}; make one with 'adaptlab vocab ... --extend N --out {folder}'")
    try:
        spec = json.loads(p.read_text())
        assert isinstance(spec["tokens"], list) and len(spec["tokens"]) == len(spec["init"]) == len(spec["ids"])
        assert isinstance(spec["base_vocab"], int)
    except (ValueError, KeyError, AssertionError, TypeError):
        raise ConfigError(f"{p}: not an extension written by adaptlab vocab") from None
    return spec
