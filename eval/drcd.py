"""The reader on DRCD (Shao et al. 2018, CC BY-SA 3.0), given the gold paragraph.

DRCD is traditional Chinese; paragraphs, questions and answers are converted with OpenCC
`t2s` (answers re-found after conversion), as for training. The test split is never
trained on. EM and F1 are the official CMRC 2018 definitions (`eval.metrics`); the
reader's best span is scored whatever its probability, and the share of questions it
would refuse at the configured threshold is reported beside.

    python -m eval.drcd                       # the shipped reader on DRCD test
    python -m eval.drcd --model var/reader-train/final --fp32
    python -m eval.drcd --titles              # paragraphs under their article's title, as the answer step reads
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from eval.metrics import char_f1, exact_match
from qa.reader import SHIPPED_READER, Reading, SpanReader, below_head, reading_head
from qa.reader_data import ReadingExample, load_drcd

BERT_BASELINE_F1 = 89.59  # the authors' BERT baseline on DRCD test (paper)
REPORTS_DIR = Path(__file__).resolve().parent / "reports"


def drcd_path(settings, split: str) -> Path:
    return settings.eval.cmrc_path.parent.parent / "drcd" / f"DRCD_{split}.json"


def read_examples(
    reader: SpanReader, examples: Sequence[ReadingExample], batch: int = 16, titles: bool = False
) -> list[Reading]:
    """The reader's best span for each example's question in its paragraph, read in batches;
    with `titles`, each paragraph under its article's title, as the answer step reads passages."""
    readings: list[Reading] = []
    for start in range(0, len(examples), batch):
        group = examples[start : start + batch]
        heads = [reading_head(e.title, e.context) if titles else "" for e in group]
        read = reader.read_pairs([e.question for e in group], [h + e.context for h, e in zip(heads, group)])
        readings += [below_head(reading, len(head)) for reading, head in zip(read, heads)]
    return readings


def evaluate(
    reader: SpanReader, examples: Sequence[ReadingExample], threshold: float, batch: int = 16, titles: bool = False
) -> dict:
    """EM, F1 (percent) and the refusal share of `reader` on `examples`."""
    em = f1 = refused = 0.0
    started = time.perf_counter()
    for example, reading in zip(examples, read_examples(reader, examples, batch, titles)):
        golds = [text for text, _ in example.answers]
        em += exact_match(reading.text, golds)
        f1 += char_f1(reading.text, golds)
        refused += reading.probability < threshold
    count = max(len(examples), 1)
    return {
        "questions": len(examples),
        "em": round(100 * em / count, 2),
        "f1": round(100 * f1 / count, 2),
        "refused_share": round(refused / count, 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from corpus.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_READER)
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--int8", action="store_true", help="torch's dynamic int8 linear layers")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--titles", action="store_true",
                        help="each paragraph under its article's title, as the answer step reads passages")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = Settings()
    path = drcd_path(settings, args.split)
    if not path.exists():
        print(f"DRCD not found at {path}; skipped.")
        return
    examples = load_drcd(path)[: args.limit]
    reader = SpanReader(args.model, int8=args.int8, bf16=False if args.fp32 else None)
    result = evaluate(reader, examples, settings.qa.refusal_threshold, titles=args.titles)
    result.update(
        {
            "split": args.split,
            "model": str(args.model),
            "runtime": "int8" if args.int8 else ("bf16" if reader.bf16 else "fp32"),
            "titles": args.titles,
            "bert_baseline_f1": BERT_BASELINE_F1,
        }
    )
    print(
        f"DRCD {args.split}{' (titles)' if args.titles else ''}: {result['questions']} questions, EM {result['em']:.2f}, F1 {result['f1']:.2f} "
        f"(BERT baseline F1 {BERT_BASELINE_F1}); refused at {settings.qa.refusal_threshold}: "
        f"{result['refused_share']:.1%}; {result['seconds']} s"
    )
    out = args.out or REPORTS_DIR / f"drcd-{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
