"""Which of the reader's linear layers survive torch's dynamic int8, and what it saves here.

Each variant quantises one group of layers (per-channel weights, activations per tensor at
run time) and keeps the rest in fp32; it is compared with the shipped reader in bf16 on DRCD
dev questions: the share whose best span is unchanged, the mean change of the answer
probability, and the time to read them all (one thread pool, batches of 16).

    python -m eval.reader_quant                     # 240 DRCD dev questions
    python -m eval.reader_quant --limit 100 --groups ffn_in,ffn_in+qkv
    python -m eval.reader_quant --answers 60        # also: the answer step's time per variant

`--answers N` times the answer step itself (`qa.answer.Answerer`, the passages read as
shipped) over the first N seed dev questions for each variant, twice, and prints the p50s.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path

from eval.drcd import REPORTS_DIR, drcd_path, read_examples
from qa.reader import SHIPPED_READER, Reading, SpanReader
from qa.reader_pack import dynamic_int8
from qa.reader_data import ReadingExample, load_drcd

# The linear layers by role: a module's name after "layer.<n>." (the head has no layer).
GROUPS = {
    "qkv": {"attention.self.query", "attention.self.key", "attention.self.value"},
    "attn_out": {"attention.output.dense"},
    "ffn_in": {"intermediate.dense"},
    "ffn_out": {"output.dense"},
    "head": {"qa_outputs"},
}
DEFAULT_VARIANTS = (
    "qkv", "attn_out", "ffn_in", "ffn_out", "head", "qkv+attn_out+ffn_in", "qkv+attn_out+ffn_in+ffn_out+head",
)
_LAYER = re.compile(r"(?:^|\.)layer\.\d+\.")


def layer_names(model, groups: Sequence[str]) -> set[str]:
    """Module names of the linear layers in `groups`."""
    import torch

    roles = set().union(*(GROUPS[group] for group in groups))
    return {
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and _LAYER.split(name)[-1] in roles
    }


def quantised(reader: SpanReader, groups: Sequence[str]) -> SpanReader:
    """A copy of `reader` with the layers of `groups` in dynamic int8 and the rest in fp32."""
    variant = copy.copy(reader)
    variant.model = dynamic_int8(copy.deepcopy(reader.model), layer_names(reader.model, groups))
    variant.bf16 = False
    return variant


def read_all(reader: SpanReader, examples: Sequence[ReadingExample]) -> tuple[list[Reading], float]:
    started = time.perf_counter()
    readings = read_examples(reader, examples)
    return readings, time.perf_counter() - started


def compare(reference: Sequence[Reading], readings: Sequence[Reading]) -> dict:
    count = max(len(reference), 1)
    return {
        "same_span": round(sum(a.text == b.text for a, b in zip(reference, readings)) / count, 3),
        "mean_probability_change": round(
            sum(abs(a.probability - b.probability) for a, b in zip(reference, readings)) / count, 4
        ),
    }


def answer_step_p50(readers: dict[str, SpanReader], questions: int, repeats: int = 2) -> dict[str, list[float]]:
    """p50 milliseconds of `Answerer.extract` over the first `questions` seed dev questions,
    per reader, `repeats` rounds (the rounds alternate readers, so load drifts hit all)."""
    import statistics

    from corpus.settings import Settings
    from eval.dataset import load_items
    from eval.runner import load_or_build_index
    from qa.answer import Answerer
    from qa.retrieve import Retriever

    settings = Settings()
    index = load_or_build_index(settings)
    retriever = Retriever(index, settings)
    asked = [item.question for item in load_items(split="dev")[:questions]]
    hits = [retriever.run(question, settings.qa.read_passages, None) for question in asked]
    answerers = {name: Answerer(reader, index.chunks, read_passages=settings.qa.read_passages) for name, reader in readers.items()}
    p50: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(repeats):
        for name, answerer in answerers.items():
            times = []
            for question, found in zip(asked, hits):
                started = time.perf_counter()
                answerer.extract(question, question, found)
                times.append((time.perf_counter() - started) * 1000)
            p50[name].append(round(statistics.median(times), 1))
    return p50


def main(argv: Sequence[str] | None = None) -> None:
    from corpus.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_READER)
    parser.add_argument("--limit", type=int, default=240)
    parser.add_argument("--groups", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated variants, each groups joined by + (" + ", ".join(GROUPS) + ")")
    parser.add_argument("--answers", type=int, default=0, help="also time the answer step over N seed dev questions")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "reader-quant.json")
    args = parser.parse_args(argv)
    path = drcd_path(Settings(), "dev")
    if not path.exists():
        print(f"DRCD not found at {path}; skipped.")
        return
    examples = load_drcd(path)
    random.Random(1).shuffle(examples)
    examples = examples[: args.limit]
    reader = SpanReader(args.model, bf16=True)
    read_all(reader, examples[:16])  # warm-up
    reference, seconds = read_all(reader, examples)
    rows = [{"variant": "bf16 (shipped)", "same_span": 1.0, "mean_probability_change": 0.0, "seconds": round(seconds, 1)}]
    fp32 = copy.copy(reader)
    fp32.bf16 = False
    readers = {"bf16 (shipped)": reader, "fp32": fp32}
    readings, seconds = read_all(fp32, examples)
    rows.append({"variant": "fp32", **compare(reference, readings), "seconds": round(seconds, 1)})
    for variant in args.groups.split(","):
        groups = [group for group in variant.split("+") if group]
        unknown = [group for group in groups if group not in GROUPS]
        if unknown:
            parser.error(f"unknown layer group {unknown[0]!r}; choose from {', '.join(GROUPS)}")
        readers[f"int8 {variant}"] = quantised(fp32, groups)
        readings, seconds = read_all(readers[f"int8 {variant}"], examples)
        rows.append({"variant": f"int8 {variant}", **compare(reference, readings), "seconds": round(seconds, 1)})
    if args.answers:
        for row, p50 in zip(rows, answer_step_p50(readers, args.answers).values()):
            row["answer_step_p50_ms"] = p50
    print(f"{len(examples)} DRCD dev questions against the shipped reader in bf16")
    print(f"{'variant':<44} {'same span':>9} {'mean |dp|':>9} {'seconds':>8}  answer step p50 ms")
    for row in rows:
        p50 = " / ".join(str(value) for value in row.get("answer_step_p50_ms", []))
        print(f"{row['variant']:<44} {row['same_span']:>9.3f} {row['mean_probability_change']:>9.4f} {row['seconds']:>8.1f}  {p50}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"questions": len(examples), "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
