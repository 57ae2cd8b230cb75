"""A BBT adapter (n=50, d=500, a random z) saved by adaptlab, loaded by peft.PeftModel.from_pretrained:
the option log-probabilities of three contexts x two options, adaptlab LocalLM vs peft, max abs diff.
Runs on the tiny random decoder of tests/conftest.py (seconds on a CPU):  python bench/bbt_peft.py"""
from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import sys, json, warnings, numpy as np, torch
sys.path.insert(0, "tests"); sys.path.insert(0, "tests/tuning")
from conftest import make_tiny_decoder
import tempfile, pathlib
from adaptlab.models import load_backbone
from adaptlab.tasks import load_task
from adaptlab.tuning import apply_method
from adaptlab.tuning.io import save_adapter
from adaptlab.engine.local import LocalLM
import peft
from transformers import AutoModelForCausalLM
d = pathlib.Path(tempfile.mkdtemp())
bb0 = make_tiny_decoder(); bb0.model.save_pretrained(d/"m"); bb0.tokenizer.save_pretrained(d/"m")
bb = load_backbone(str(d/"m"))
t = apply_method(bb, "bbt", {"d": 500, "num_virtual_tokens": 50}, load_task("reviews"))
t.prompt.set(0, np.random.default_rng(1).normal(size=500)); t.eval()
save_adapter(d/"a", t)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pm = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(d/"m"), str(d/"a")).eval()
lm = LocalLM(bb, model=t)
ctxs = ["Review: a great movie\nSentiment:", "Review: an awful boring film\nSentiment:", "Review: fine cast\nSentiment:"]
opts = [" positive", " negative"]
worst = 0
for ctx in ctxs:
    ours = [o.logprob for o in lm.score([ctx], [opts])[0]]
    for o, a in zip(opts, ours):
        c, tt = lm._encode_pair(ctx, o); ids = torch.tensor([c+tt])
        with torch.no_grad():
            lp = torch.log_softmax(pm(input_ids=ids).logits[0, -ids.shape[1]:].float(), -1)
        b = sum(float(lp[len(c)-1+j, k]) for j, k in enumerate(tt))
        worst = max(worst, abs(a-b))
print(json.dumps({"n": 50, "d": 500, "max_abs_diff": worst}))
