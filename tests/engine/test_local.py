"""The local engine against plain Hugging Face computations on a tiny random Llama."""

import pytest
import torch
import torch.nn.functional as F

from adaptlab.engine.local import LocalLM
from adaptlab.models import cache_arg

DEMOS = ("Review: a great movie with a fine cast\nSentiment: positive\n\n"
         "Review: an awful boring film\nSentiment: negative\n\n")


def full_logprobs(bb, context: str, option: str) -> list[float]:
    """log P(option tokens | context) from one plain forward over context + option."""
    lm = LocalLM(bb)
    ctx, cont = lm._encode_pair(context, option)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(bb.model(input_ids=ids).logits.float(), -1)[0]
    return [logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)]


@pytest.mark.parametrize("shared", [False, True])
def test_score_matches_full_forward(tiny_decoder, shared):
    head = DEMOS if shared else ""
    contexts = [head + "Review: great fine cast\nSentiment:", head + "Review: boring\nSentiment:",
                head + "Review: The price is terrible. I'm returning it.\nSentiment:"]
    options = [[" positive", " negative"], [" positive", " negative"], [" good value", " bad", " terrible price"]]
    lm = LocalLM(tiny_decoder, batch_size=2)
    got = lm.score(contexts, options)
    for c, opts, row in zip(contexts, options, got):
        for o, s in zip(opts, row):
            ref = full_logprobs(tiny_decoder, c, o)
            assert len(s.token_logprobs) == len(ref)
            assert s.logprob == pytest.approx(sum(ref), abs=1e-4)
            assert s.token_logprobs == pytest.approx(ref, abs=1e-4)
    if shared:
        assert lm._prefix is not None and len(lm._prefix[0]) >= 8     # the demos were cached
        # a second call over the same demos reuses the cached KV (no new prefix forward)
        kv = lm._prefix[1]
        lm.score(contexts[:2], options[:2])
        assert lm._prefix[1] is kv


def test_score_single_context_multi_token_options_sharing_tokens(tiny_decoder):
    # options that share their first tokens must not be cut into the cached prefix
    c = DEMOS + "Review: fine\nSentiment:"
    opts = [" very positive", " very negative"]
    got = LocalLM(tiny_decoder).score([c], [opts])[0]
    for o, s in zip(opts, got):
        assert s.logprob == pytest.approx(sum(full_logprobs(tiny_decoder, c, o)), abs=1e-4)


def test_greedy_generate_equals_hf_generate(tiny_decoder):
    bb = tiny_decoder
    prompts = ["Question: Tom has 3 apples", DEMOS + "Review: a fine cast\nSentiment:",
               DEMOS + "Review: awful\nSentiment:"]
    lm = LocalLM(bb, batch_size=8)
    ours = lm.generate(prompts, n=1, max_new_tokens=12, temperature=0.0)
    for p, o in zip(prompts, ours):
        ids = torch.tensor([lm.encode(p)])
        ref = bb.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                pad_token_id=bb.tokenizer.pad_token_id)
        new = ref[0, ids.shape[1]:].tolist()
        eos = [i for i, t in enumerate(new) if t in lm.eos_ids]
        new = new[: eos[0]] if eos else new
        assert o[0] == bb.tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("rows", [1, 3])
def test_decode_step_logits_equal_the_models(tiny_decoder, rows):
    # the bare Llama's decode step takes the vocabulary projection itself (W h^T for a few rows)
    lm = LocalLM(tiny_decoder)
    assert lm._head is tiny_decoder.model.get_output_embeddings().weight
    ids = torch.tensor([lm.encode("Review: a great movie")] * rows)
    with torch.no_grad():
        pre = tiny_decoder.model(input_ids=ids[:, :-1], use_cache=True)
        ref = tiny_decoder.model(input_ids=ids[:, :-1], use_cache=True)
        cache = {cache_arg(tiny_decoder.model): ref.past_key_values}
        want = tiny_decoder.model(input_ids=ids[:, -1:], **cache).logits[:, -1]
        _, got = lm._decode(input_ids=ids[:, -1:], past_key_values=pre.past_key_values, use_cache=True)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)


def test_decode_head_only_for_bare_linear_head_models(tiny_decoder):
    from adaptlab.tuning import apply_method

    assert LocalLM(tiny_decoder, model=apply_method(tiny_decoder, "lora"))._head is None
    tiny_decoder.model.config.logits_scaling = 2.0            # e.g. Granite scales its logits
    assert LocalLM(tiny_decoder)._head is None


def test_n_samples_reproducible_with_seed(tiny_decoder):
    lm = LocalLM(tiny_decoder)
    a = lm.generate(["Review: a great movie"], n=4, max_new_tokens=10, temperature=1.0, seed=3)
    b = lm.generate(["Review: a great movie"], n=4, max_new_tokens=10, temperature=1.0, seed=3)
    c = lm.generate(["Review: a great movie"], n=4, max_new_tokens=10, temperature=1.0, seed=4)
    assert a == b and len(a[0]) == 4
    assert a != c
    f = lm.cost.forwards
    lm.generate(["Review: a great movie"], n=4, max_new_tokens=5, temperature=1.0, seed=3)
    assert lm.cost.forwards - f <= 5            # one prefill + at most 4 decode steps for all 4 samples


def test_n_samples_match_sampling_each_alone(tiny_decoder):
    # with temperature 0 all n samples equal the single greedy completion
    lm = LocalLM(tiny_decoder)
    one = lm.generate(["Review: an awful"], n=1, max_new_tokens=8)[0][0]
    many = lm.generate(["Review: an awful"], n=3, max_new_tokens=8)[0]
    assert many == [one] * 3


def test_stop_strings_cut_rows_independently(tiny_decoder):
    lm = LocalLM(tiny_decoder)
    prompts = ["Review: a great movie", "Question: Tom has 3 apples"]
    free = lm.generate(prompts, n=1, max_new_tokens=16)
    # pick a stop string that occurs in the first completion only
    text = free[0][0]
    stop = next((text[i:i + 2] for i in range(2, len(text) - 1) if text[i:i + 2] not in free[1][0]), None)
    if stop is None:
        pytest.skip("random model produced no distinguishing substring")
    cut = lm.generate(prompts, n=1, max_new_tokens=16, stop=[stop])
    assert cut[0][0] == text[: text.find(stop)]
    assert lm.finish_reasons[0] == [stop]
    assert cut[1][0] == free[1][0]                  # the other row ran on unaffected
    assert lm.finish_reasons[1][0] in ("eos", "length")


def test_cache_passed_under_the_models_own_argument_name(tiny_decoder, tiny_encoder):
    """transformers renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40):
    neither the engine's cached decoding nor the tuning seam's prefixes use the old name."""
    import warnings

    from adaptlab.tasks import load_task
    from adaptlab.tuning import apply_method

    assert cache_arg(tiny_decoder.model) in ("cache", "past_key_values")
    lm = LocalLM(tiny_decoder)
    enc = apply_method(tiny_encoder, "p-tuning-v2", {"num_virtual_tokens": 3}, load_task("reviews")).eval()
    ids = torch.tensor([[5, 6, 7]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm.generate(["a b c", "a b c d"], n=2, max_new_tokens=3, temperature=0.8)
        lm.score(["a b c d e"] * 2, [["f", "g"], ["f", "g"]])
        with torch.no_grad():
            enc.classify(ids, torch.ones_like(ids))
    assert not [w for w in caught if "past_key_values" in str(w.message)]


@pytest.mark.parametrize("head", ["", DEMOS])
def test_multiple_choice_runs_each_question_once(tiny_decoder, head):
    """K multi-token options of one question: the question's tokens run once, then only the options
    (N x prompt + N x K x option), and the scores are those of a full forward per option."""
    questions = [head + q for q in ("Question: What colour is the sky on a clear summer day?\nAnswer:",
                                    "Which animal on the farm says moo every morning?\nAnswer:",
                                    "Where do most penguins live, far away in the south?\nAnswer:")]
    options = [[" the red apple", " a blue car", " green tea leaves", " none of them at all"]] * 3
    grouped, flat = LocalLM(tiny_decoder), LocalLM(tiny_decoder, group_options=False)
    got, ref = grouped.score(questions, options), flat.score(questions, options)
    for q, opts, row, ref_row in zip(questions, options, got, ref):
        for o, s, r in zip(opts, row, ref_row):
            assert s.logprob == pytest.approx(sum(full_logprobs(tiny_decoder, q, o)), abs=1e-4)
            assert s.token_logprobs == pytest.approx(r.token_logprobs, abs=1e-4)
    enc = grouped._encode_pair
    prompt = sum(len(enc(q, opts[0])[0]) for q, opts in zip(questions, options))
    option = sum(len(enc(q, o)[1]) for q, opts in zip(questions, options) for o in opts)
    # each question once (its last token runs with the options), each option's tokens but its last
    assert grouped.cost.prompt_tokens <= prompt + option
    own = prompt - len(questions) * (len(grouped.encode(head)) if head else 0)     # the questions' own tokens
    assert flat.cost.prompt_tokens >= 4 * own       # the old path: every question once per option


def test_shared_prefix_cache_follows_disable_adapters(tiny_decoder):
    """A prefix cached with the adapter on is not reused with it off: the base's scores and text."""
    from adaptlab.tuning import apply_method

    tuned = apply_method(tiny_decoder, "lora", {"dropout": 0.0}, None)
    g = torch.Generator().manual_seed(0)
    for p in tuned.parameters():
        if p.requires_grad:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.5)        # B != 0: adapter on differs from off
    prefix = "the movie was a great film with a fine cast and a good story, all in all "
    ctxs, opts = [prefix + "it was", prefix + "the cast was"], [["good", "bad"]] * 2
    lm = LocalLM(tiny_decoder, model=tuned)
    def lp(rows):
        return torch.tensor([[o.logprob for o in r] for r in rows])

    on = lp(lm.score(ctxs, opts))
    with tuned.disable_adapters():
        off = lp(lm.score(ctxs, opts))
        off_text = lm.generate(ctxs, max_new_tokens=4)
    base = LocalLM(tiny_decoder)
    want = lp(base.score(ctxs, opts))
    assert lm._prefix is not None and len(lm._prefix[0]) >= 8          # the prefix was cached
    assert torch.allclose(off, want, atol=1e-5)
    assert not torch.allclose(on, want, atol=1e-3)
    assert off_text == base.generate(ctxs, max_new_tokens=4)
