"""Shared fixtures: tiny random-weight backbones (a 2-layer Llama decoder and a 2-layer BERT
encoder) with tokenizers trained in memory, so tests need no downloaded model and run fast."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "Review: a great movie with a fine cast\nSentiment: positive",
    "Review: an awful boring film\nSentiment: negative",
    "The battery is excellent. I'm keeping it. The price is terrible. I'm returning it.",
    "Question: Tom has 3 apples and buys 4 more. How many apples? Answer: 7. The answer is 7.",
    "Let's think step by step. Therefore, the answer is yes no true false A B C D E.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = << >> ( ) , . ? ! : ; ' \"",
]


def _bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(CORPUS * 20, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def make_tiny_decoder(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from adaptlab.models import Backbone

    tok = _bpe_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    return Backbone(model=model, tokenizer=tok, kind="decoder", name="tiny-llama", source="test")


def make_tiny_encoder(seed: int = 0):
    from transformers import BertConfig, BertModel

    from adaptlab.models import Backbone

    tok = _wordpiece_tokenizer()
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=256, pad_token_id=tok.pad_token_id)
    model = BertModel(cfg).eval()
    return Backbone(model=model, tokenizer=tok, kind="encoder", name="tiny-bert", source="test")


@pytest.fixture
def tiny_decoder():
    return make_tiny_decoder()


@pytest.fixture
def tiny_encoder():
    return make_tiny_encoder()


def save_tiny(bb, folder) -> str:
    """A tiny backbone as a model folder; every process and run that loads it gets the same
    tokenizer (two ``make_tiny_encoder()`` calls may train slightly different WordPiece vocabularies)."""
    bb.model.save_pretrained(folder)
    bb.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The tiny decoder saved as a model folder (for CLI runs in subprocesses)."""
    return save_tiny(make_tiny_decoder(), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def tiny_encoder_folder(tmp_path_factory):
    """The tiny encoder saved as a model folder (for runs in subprocesses)."""
    return save_tiny(make_tiny_encoder(), tmp_path_factory.mktemp("m") / "tiny-bert")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def shared_data_dir():
    """../shared/data beside the checkout (the benchmark data), or None."""
    from pathlib import Path

    d = os.environ.get("ADAPTLAB_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    return d if Path(d, "sst2").is_dir() else None


def run_cli(args: list[str]) -> int:
    """``adaptlab ARGS`` in this process; returns the exit code."""
    from adaptlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                "ADAPTLAB_THREADS")


@pytest.fixture(autouse=True)
def _restore_thread_policy():
    """CLI runs in this process apply adaptlab.threads; put torch and the environment back after."""
    import torch

    from adaptlab import threads

    n, env, choice = torch.get_num_threads(), {k: os.environ.get(k) for k in _THREAD_VARS}, threads._CHOICE
    yield
    threads._CHOICE = choice
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


TOY_SENT = ["a fine film", "an awful mess", "great cast", "boring plot", "lovely story", "dull and slow"]


def toy_mixture(tmp_path, monkeypatch, tasks: dict, templates: dict | None = None, test_split: bool = True):
    """A tiny user mixture for the generalist tests. ``tasks``: name -> (cluster or None, label 0,
    label 1); a task with cluster None gets data and a YAML but is not in the mixture. Writes
    ``<name>.yaml`` and ``data/<name>/train.jsonl`` (+ ``test.jsonl``), points ``ADAPTLAB_DATA_DIR``
    at the data, and returns (mixture path, {name: task YAML path})."""
    import json

    data, paths = tmp_path / "data", {}
    for name, (_, a, b) in tasks.items():
        (data / name).mkdir(parents=True)
        rows = [{"text": f"{s} {i}", "label": (a, b)[i % 2]} for i, s in enumerate(TOY_SENT * 2)]
        for split in ("train", "test") if test_split else ("train",):
            (data / name / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(f"name: {name}\nschema: classification\nlabels: [{a}, {b}]\n"
                               "template: \"Text: {text}\\nLabel:\"\n")
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(data))
    p = tmp_path / "mix.yaml"
    default = ["{text} is {options}?", "Say: {text}"]
    p.write_text("name: toy\ncap: 8\ntasks:\n" + "".join(
        f"  - {{task: {name}.yaml, cluster: {c}, templates: {json.dumps((templates or {}).get(name, default))}}}\n"
        for name, (c, _, _) in tasks.items() if c is not None))
    return str(p), {k: str(v) for k, v in paths.items()}
