"""The masked-LM objective's masking statistics on real text with the default encoder's tokenizer.

    ADAPTLAB_DATA_DIR=bench-data python bench/mlm_masking.py [--tokens 100000]

Collates SST-2 train sentences through ``train.objectives.MaskedLM`` (transformers'
``DataCollatorForLanguageModeling``) until ``--tokens`` real tokens are seen and prints: the share
of real (non-special, non-pad) tokens chosen, and of the chosen ones the share replaced by [MASK],
by a random token, and left unchanged (the target: 15%, then 80/10/10), and how many special or
padding positions were ever chosen (target 0). ``tests/train/test_pretrain.py`` asserts the same.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--model", default="minilm-l6")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from adaptlab.data import load_split, task_texts
    from adaptlab.models import DEFAULTS, default_path
    from adaptlab.tasks import load_task
    from adaptlab.train.objectives import MaskedLM

    tok = AutoTokenizer.from_pretrained(str(default_path(args.model))) if args.model in DEFAULTS else \
        AutoTokenizer.from_pretrained(args.model)
    task = load_task("sst2")
    obj = MaskedLM(tok, torch.nn.Identity(), 64)
    feats = obj.featurize(task_texts(task, load_split(task, "train", limit=20000)))
    specials = set(tok.all_special_ids)
    torch.manual_seed(0)
    real = chosen = masked = kept = special_hits = 0
    for s in range(0, len(feats), 32):
        part = feats[s: s + 32]
        b = obj.collate(part)
        orig = torch.full_like(b["input_ids"], tok.pad_token_id)
        for i, f in enumerate(part):
            orig[i, : len(f["ids"])] = torch.tensor(f["ids"])
        sel = b["labels"] != -100
        sp = torch.isin(orig, torch.tensor(sorted(specials)))
        special_hits += int((sel & sp).sum())
        real += int((~sp).sum())
        chosen += int(sel.sum())
        masked += int((b["input_ids"][sel] == tok.mask_token_id).sum())
        kept += int((b["input_ids"][sel] == orig[sel]).sum())
        if real >= args.tokens:
            break
    print(f"real tokens {real:,}; chosen {chosen:,} = {100 * chosen / real:.2f}% (target 15%)")
    print(f"of the chosen: [MASK] {100 * masked / chosen:.2f}%, random {100 * (chosen - masked - kept) / chosen:.2f}%, "
          f"unchanged {100 * kept / chosen:.2f}% (target 80/10/10; a random pick equal to the original counts as unchanged)")
    print(f"special or padding positions chosen: {special_hits} (target 0)")


if __name__ == "__main__":
    main()
