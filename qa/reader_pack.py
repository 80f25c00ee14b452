"""Shipping the reader inside the repository (at most 40 MB) and loading it back.

Two steps shrink the trained model (470 MB in fp32):
- the vocabulary is pruned to the pieces Chinese text uses: those the tokenizer picks for
  the training paragraphs, the seed documents and every word of jieba's dictionary, plus
  every single-character piece of the CJK, Latin and punctuation blocks. For text whose
  best segmentation uses only kept pieces the tokenizer's output is unchanged (dropping
  unused pieces cannot make another path better); elsewhere it falls back to shorter
  pieces.
- matrices are stored as int8 with one fp32 scale per row (symmetric), everything else as
  fp16. Loading dequantises; `int8=True` then runs the linear layers with torch's dynamic
  int8 kernels.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

WEIGHTS = "reader.safetensors"
QUANTISED_SUFFIX = ".int8"
SCALE_SUFFIX = ".scale"

# Unicode blocks whose single-character pieces are always kept.
_KEEP_BLOCKS = (
    (0x0020, 0x024F),  # ASCII, Latin-1, Latin extended
    (0x2000, 0x206F),  # general punctuation
    (0x2100, 0x22FF),  # letterlike symbols, number forms, arrows, maths
    (0x2460, 0x24FF),  # enclosed alphanumerics ①
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3200, 0x33FF),  # enclosed CJK, CJK compatibility
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # halfwidth and fullwidth forms
)


def _single_character_kept(piece: str) -> bool:
    body = piece.removeprefix("\u2581")
    return len(body) == 1 and any(low <= ord(body) <= high for low, high in _KEEP_BLOCKS)


def jieba_words() -> list[str]:
    """Every word of jieba's bundled dictionary."""
    import jieba

    path = Path(jieba.__file__).resolve().parent / "dict.txt"
    with open(path, encoding="utf-8") as handle:
        return [line.split(" ", 1)[0] for line in handle if line.strip()]


def kept_piece_ids(tokenizer_json: dict, tokenizer, texts: Iterable[str]) -> list[int]:
    """Ids of the pieces to keep: specials, single characters of the kept blocks, and every
    piece the (full) tokenizer picks for `texts`."""
    vocab = tokenizer_json["model"]["vocab"]
    tokenizer.no_truncation()  # a saved tokenizer may carry a training call's settings
    tokenizer.no_padding()
    keep = {index for index, (piece, _score) in enumerate(vocab) if piece.startswith("<") and piece.endswith(">")}
    keep.update(index for index, (piece, _score) in enumerate(vocab) if _single_character_kept(piece))
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= 2048:
            for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
                keep.update(encoding.ids)
            batch = []
    if batch:
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            keep.update(encoding.ids)
    return sorted(index for index in keep if index < len(vocab))


def prune_tokenizer(tokenizer_json: dict, kept: list[int]) -> dict:
    """The tokenizer.json with only the kept pieces (new id = rank among the kept ones)."""
    pruned = json.loads(json.dumps(tokenizer_json))
    pruned["truncation"] = pruned["padding"] = None
    vocab = tokenizer_json["model"]["vocab"]
    new_id = {old: new for new, old in enumerate(kept)}
    pruned["model"]["vocab"] = [vocab[old] for old in kept]
    pruned["model"]["unk_id"] = new_id[tokenizer_json["model"]["unk_id"]]
    for token in pruned.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    processor = pruned.get("post_processor") or {}
    for special in (processor.get("special_tokens") or {}).values():
        special["ids"] = [new_id[old] for old in special["ids"]]
    return pruned


def quantise_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: matrix ≈ q * scale[:, None]."""
    scale = np.abs(matrix).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantised = np.clip(np.rint(matrix / scale[:, None]), -127, 127).astype(np.int8)
    return quantised, scale


def pack(
    trained_dir: Path, out_dir: Path, texts: Iterable[str], extra_files: Iterable[Path] = (), quantise: bool = True
) -> dict:
    """Write the shippable reader to `out_dir`; returns its size figures. `quantise=False`
    keeps the matrices in fp16 (over the size budget: for measuring what int8 costs)."""
    import torch
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForQuestionAnswering

    trained_dir, out_dir = Path(trained_dir), Path(out_dir)
    tokenizer_json = json.loads((trained_dir / "tokenizer.json").read_text(encoding="utf-8"))
    full_tokenizer = Tokenizer.from_file(str(trained_dir / "tokenizer.json"))
    kept = kept_piece_ids(tokenizer_json, full_tokenizer, texts)
    model = AutoModelForQuestionAnswering.from_pretrained(str(trained_dir), dtype=torch.float32)
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    state["bert.embeddings.word_embeddings.weight"] = state["bert.embeddings.word_embeddings.weight"][kept]

    tensors: dict[str, np.ndarray] = {}
    for name, value in sorted(state.items()):
        if quantise and value.ndim == 2 and "position_embeddings" not in name and "token_type" not in name and "qa_outputs" not in name:
            quantised, scale = quantise_rows(value.astype(np.float32))
            tensors[name + QUANTISED_SUFFIX] = quantised
            tensors[name + SCALE_SUFFIX] = scale
        else:
            tensors[name] = value.astype(np.float16 if value.ndim == 2 and "qa_outputs" not in name else np.float32)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "policyqa-reader-int8"})
    config = json.loads((trained_dir / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = len(kept)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    pruned = prune_tokenizer(tokenizer_json, kept)
    (out_dir / "tokenizer.json").write_text(json.dumps(pruned, ensure_ascii=False), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (trained_dir / name).exists():
            shutil.copy(trained_dir / name, out_dir / name)
    for path in extra_files:
        shutil.copy(path, out_dir / Path(path).name)
    size = sum(path.stat().st_size for path in out_dir.iterdir())
    return {"vocabulary": len(kept), "full_vocabulary": len(tokenizer_json["model"]["vocab"]), "bytes": size}


def load_reader_model(model_dir: Path, int8: bool = True):
    """(model, tokenizer) from a packed reader directory, or from a plain transformers
    directory (a training run's output) when it holds no packed weights."""
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoModelForQuestionAnswering, PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    packed = model_dir / WEIGHTS
    if packed.exists():
        config = AutoConfig.from_pretrained(str(model_dir))
        model = AutoModelForQuestionAnswering.from_config(config)
        raw = load_file(str(packed))
        state = {}
        for name, value in raw.items():
            if name.endswith(SCALE_SUFFIX):
                continue
            if name.endswith(QUANTISED_SUFFIX):
                base = name[: -len(QUANTISED_SUFFIX)]
                value = value.astype(np.float32) * raw[base + SCALE_SUFFIX][:, None]
                name = base
            state[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [name for name in missing if "position_ids" not in name] or unexpected:
            raise ValueError(f"reader weights do not match its config: missing {missing}, unexpected {unexpected}")
    else:
        model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir))
    model.eval()
    if int8:
        model = dynamic_int8(model)
    return model, tokenizer


def dynamic_int8(model, layers=None):
    """`model` with its linear layers (or only the modules named in `layers`) run by torch's
    dynamic int8 kernels; the model is changed in place."""
    import torch

    # Per-channel weight scales, as the packed file stores them.
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    spec = {torch.nn.Linear: qconfig} if layers is None else {name: qconfig for name in layers}
    return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
