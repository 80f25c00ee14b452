"""The reader: question + passages in, an answer span and the probability that the passage
answers, per passage (span extraction with a no-answer option, as in SQuAD 2.0).

The model is the e5 encoder fine-tuned by `qa.reader_train` with a start/end head; a
window that does not hold the answer points both ends at <s>. For a passage, the best span
over its windows is compared with the no-answer score: within one window both are products
of the same two softmaxes, so `sigmoid(span score - null score)` is the model's probability
of the span against "no answer" (`Reading.probability`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

SHIPPED_READER = Path(__file__).resolve().parent / "reader_model"


@dataclass(frozen=True)
class Reading:
    """The reader's answer in one passage: [start, end) character offsets into it."""

    start: int
    end: int
    text: str
    probability: float
    passage: int  # index into the passages read
    # The next best spans in the same passage, most probable first (each without
    # alternatives of its own): what the answer step may prefer when the best one misses
    # something the question pins down, such as its year.
    alternatives: tuple["Reading", ...] = ()


@runtime_checkable
class Reader(Protocol):
    def read(self, question: str, passages: Sequence[str]) -> list[Reading]:
        """One `Reading` per passage, in the order given."""
        ...


def reading_head(title: str, text: str) -> str:
    """What the reader sees above a passage: its document's title on a line of its own,
    unless the passage opens with it. Training and the answer step both use this, so the
    reader is trained on what it is shown."""
    return f"{title}\n" if title and not text.startswith(title) else ""


def below_head(reading: Reading, head: int) -> Reading:
    """`reading` of head + text as a reading of `text`: the best of its spans that lies in
    the text, moved back by the head's length (a span in the title cannot be quoted)."""
    if not head:
        return reading
    spans = [
        replace(span, start=span.start - head, end=span.end - head, alternatives=())
        for span in (reading, *reading.alternatives)
        if span.start >= head and span.end > span.start
    ]
    if not spans:
        return Reading(0, 0, "", 0.0, reading.passage)
    return replace(spans[0], alternatives=tuple(spans[1:]))


class ReaderError(RuntimeError):
    """The reader model cannot be loaded."""


class SpanReader:
    """A transformers question-answering model read on the CPU. Thread-safe: calls are
    serialised (one forward pass already uses every core)."""

    def __init__(
        self,
        model_dir: Path = SHIPPED_READER,
        *,
        max_length: int = 256,
        stride: int = 96,
        max_question_chars: int = 64,
        max_answer_tokens: int = 64,
        n_best: int = 20,
        alternatives: int = 4,
        threads: int | None = None,
        int8: bool = False,
        bf16: bool | None = None,
    ) -> None:
        import torch

        from qa.reader_pack import load_reader_model

        if threads:
            torch.set_num_threads(int(threads))
        model_dir = Path(model_dir)
        try:
            self.model, self.tokenizer = load_reader_model(model_dir, int8=int8)
        except (OSError, ValueError, KeyError) as error:
            raise ReaderError(f"无法加载阅读模型 / cannot load the reader from {model_dir}: {error}") from None
        self.model_dir = model_dir
        self.max_length = max_length
        self.stride = stride
        self.max_question_chars = max_question_chars
        self.max_answer_tokens = max_answer_tokens
        self.n_best = n_best
        self.alternatives = alternatives
        # bf16 autocast where the CPU computes bf16 natively (index.torch_e5.cpu_has_bf16);
        # torch's dynamic int8 kernels are faster still but cost the reader much of its
        # accuracy and its calibration (README: what pruning and quantisation cost).
        if bf16 is None:
            from index.torch_e5 import cpu_has_bf16

            bf16 = cpu_has_bf16() and not int8
        self.bf16 = bool(bf16)
        self._torch = torch
        self._lock = threading.Lock()

    def read(self, question: str, passages: Sequence[str]) -> list[Reading]:
        passages = list(passages)
        return self.read_pairs([question] * len(passages), passages)

    def read_pairs(self, questions: Sequence[str], passages: Sequence[str]) -> list[Reading]:
        """One `Reading` per (question, passage) pair, read in one batch; `Reading.passage`
        is the pair's index."""
        passages = list(passages)
        if not passages:
            return []
        torch = self._torch
        encoded = self.tokenizer(
            [question[: self.max_question_chars] for question in questions],
            passages,
            truncation="only_second",
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        with self._lock, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            output = self.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        starts = output.start_logits.float().numpy()
        ends = output.end_logits.float().numpy()
        offsets = encoded["offset_mapping"].numpy()
        owners = encoded["overflow_to_sample_mapping"].numpy()
        candidates: dict[int, list[tuple[float, int, int]]] = {}
        null: dict[int, float] = {}
        for window in range(len(owners)):
            passage = int(owners[window])
            context = np.array([sequence == 1 for sequence in encoded.sequence_ids(window)])
            null_score = float(starts[window, 0] + ends[window, 0])
            null[passage] = min(null.get(passage, math.inf), null_score)
            for score, first, last in self._spans(starts[window], ends[window], context):
                char_start, char_end = int(offsets[window, first, 0]), int(offsets[window, last, 1])
                candidates.setdefault(passage, []).append((score, char_start, char_end))
        readings = []
        for passage, text in enumerate(passages):
            found = []
            for score, char_start, char_end in sorted(candidates.get(passage, []), key=lambda c: -c[0]):
                char_start, char_end = _trim(text, char_start, char_end)
                if char_end <= char_start or any(_overlap(char_start, char_end, r.start, r.end) for r in found):
                    continue  # an alternative is another place in the passage, not a nudge of the best
                probability = 1.0 / (1.0 + math.exp(-(score - null[passage])))
                found.append(Reading(char_start, char_end, text[char_start:char_end], probability, passage))
                if len(found) > self.alternatives:
                    break
            if not found:
                readings.append(Reading(0, 0, "", 0.0, passage))
            else:
                readings.append(replace(found[0], alternatives=tuple(found[1:])))
        return readings

    def _spans(self, starts: np.ndarray, ends: np.ndarray, context: np.ndarray) -> list[tuple[float, int, int]]:
        """Spans inside the context, at most `max_answer_tokens` long, from the `n_best`
        best starts and ends: (start+end score, first token, last token)."""
        masked_starts = np.where(context, starts, -np.inf)
        masked_ends = np.where(context, ends, -np.inf)
        start_candidates = np.argsort(masked_starts)[::-1][: self.n_best]
        end_candidates = np.argsort(masked_ends)[::-1][: self.n_best]
        spans = []
        for first in start_candidates:
            if not context[first]:
                continue
            for last in end_candidates:
                if not context[last] or last < first or last - first + 1 > self.max_answer_tokens:
                    continue
                spans.append((float(starts[first] + ends[last]), int(first), int(last)))
        return spans


def _overlap(start: int, end: int, other_start: int, other_end: int) -> bool:
    return start < other_end and other_start < end


_TRIM = " \t\r\n\u3000，。；：、,.;:"


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop the spaces and separating punctuation a token span may carry at its edges (the
    metaspace token of a leading character covers the character before it)."""
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end
