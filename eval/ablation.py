"""The answer step's settings, varied one at a time on one split (hybrid retrieval).

    python -m eval.ablation --split test                 # each kept rule switched off
    python -m eval.ablation --split dev --grid passages  # how many passages the reader reads

Prints one row per variant and writes eval/reports/ablation-<grid>-<split>.json. Tune on
dev; the rule ablation is reported on test.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from corpus.settings import Settings
from eval.metrics import summarize
from eval.report import format_value, text_table

REPORTS_DIR = Path(__file__).resolve().parent / "reports"

GRIDS: dict[str, list[tuple[str, dict]]] = {
    "rules": [
        ("all rules on (shipped)", {}),
        ("list enumeration off", {"list_enumeration": False}),
        ("table rows off", {"table_rows": False}),
        ("compound questions off", {"compound_questions": False}),
        ("second passage off", {"second_passage_ratio": 0.0}),
        ("year check off", {"year_check": False}),
        ("unknown names off", {"refuse_unknown_names": False}),
        ("passage titles off", {"passage_titles": False}),
        ("all rules off", {"list_enumeration": False, "table_rows": False,
                           "compound_questions": False, "second_passage_ratio": 0.0,
                           "year_check": False, "refuse_unknown_names": False,
                           "passage_titles": False}),
    ],
    "passages": [(f"reads {n} passages", {"read_passages": n}) for n in (2, 3, 4, 5, 6)],
    "early-exit": [(f"early exit at {p}", {"reader_early_exit": p}) for p in (0.0, 0.8, 0.9, 0.95)],
    "second": [(f"second passage at {r}", {"second_passage_ratio": r}) for r in (0.0, 0.7, 0.8, 0.9, 0.95)],
}


def run_grid(settings: Settings, split: str, grid: str) -> list[dict]:
    from eval.dataset import load_items
    from eval.runner import EvalRunner, load_or_build_index

    items = load_items(split=None if split == "all" else split)
    index = load_or_build_index(settings)
    rows = []
    for label, update in GRIDS[grid]:
        variant = settings.model_copy(update={"retrieval_mode": "hybrid", **update})
        results = EvalRunner(index, variant).run_config("hybrid", items)
        rows.append({"variant": label, "settings": update, **asdict(summarize("hybrid", results))})
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    header = ["variant", "ans acc", "cite acc", "refuse R", "wrong ref", "med len", "p50 ms", "p95 ms"]
    lines = [
        [row["variant"]]
        + [format_value(row[key], "ratio") for key in ("answer_accuracy", "citation_accuracy", "refusal_recall", "wrongly_refused")]
        + [format_value(row["median_answer_chars"], "chars"), format_value(row["latency_p50_ms"], "ms"),
           format_value(row["latency_p95_ms"], "ms")]
        for row in rows
    ]
    return text_table(header, lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", choices=["dev", "test", "all"])
    parser.add_argument("--grid", default="rules", choices=sorted(GRIDS))
    args = parser.parse_args(argv)
    rows = run_grid(Settings(), args.split, args.grid)
    print(format_rows(rows))
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    out = REPORTS_DIR / f"ablation-{args.grid}-{args.split}.json"
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
