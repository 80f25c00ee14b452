"""Eval outputs: the terminal table, the JSON of a run, a Markdown report with PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.metrics import (
    ConfigMetrics,
    ItemResult,
    ThresholdPoint,
    accuracy_by,
    refusal_frontier,
    refusal_sweep,
)
from eval.runner import EvalRun

# (header, ConfigMetrics field, format): the table's columns, terminal and Markdown alike
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("hit@1", "hit_at_1", "ratio"),
    ("hit@3", "hit_at_3", "ratio"),
    ("hit@5", "hit_at_5", "ratio"),
    ("MRR", "mrr", "ratio"),
    ("ans acc", "answer_accuracy", "ratio"),
    ("cite acc", "citation_accuracy", "ratio"),
    ("refuse P", "refusal_precision", "ratio"),
    ("refuse R", "refusal_recall", "ratio"),
    ("wrong ref", "wrongly_refused", "ratio"),
    ("med len", "median_answer_chars", "int"),
    ("p50 ms", "latency_p50_ms", "ms"),
    ("p95 ms", "latency_p95_ms", "ms"),
)

CJK_FONTS = ("Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "SimHei")


def format_value(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{value:.3f}"
    if kind == "ms":
        return f"{value:.1f}"
    return f"{value:.0f}"


def format_table(rows: Sequence[ConfigMetrics]) -> str:
    """Configurations as rows, metrics as columns, aligned for a terminal."""
    header = ["config", "items", *(title for title, _, _ in COLUMNS)]
    lines = [
        [row.config, str(row.items)]
        + [format_value(getattr(row, name), kind) for _, name, kind in COLUMNS]
        for row in rows
    ]
    return text_table(header, lines)


def text_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table with a rule under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    rendered = [header, ["-" * width for width in widths], *lines]
    return "\n".join(_aligned(cells, widths) for cells in rendered)


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The first cell left-aligned, the numbers right-aligned."""
    return "  ".join(
        cell.ljust(width) if i == 0 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths))
    )


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(map(_escape_cell, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(_escape_cell, line)) + " |" for line in lines]
    return "\n".join(out)


def _escape_cell(cell: str) -> str:
    return " ".join(str(cell).replace("|", "\\|").split())


def failures(results: Sequence[ItemResult]) -> list[ItemResult]:
    """Answerable items not answered correctly, and unanswerable items that were answered."""
    return [r for r in results if (r.answerable and not r.answer_correct) or
            (not r.answerable and r.answered)]


def describe_expected(result: ItemResult) -> str:
    if not result.answerable:
        return "(refusal)"
    if result.keywords:
        return " / ".join(result.keywords)
    return result.expected_answer


def describe_got(result: ItemResult, limit: int = 120) -> str:
    if result.error:
        return f"(rejected) {result.error}"
    text = result.answer if result.answered else f"(refused) {result.answer}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_failures(config: str, results: Sequence[ItemResult], limit: int) -> str:
    """Up to `limit` failures of one configuration, one block each, for the terminal."""
    failed = failures(results)
    lines = [f"{config}: {len(failed)} failures" + (f", first {limit}" if len(failed) > limit
                                                      else "")]
    for result in failed[:limit]:
        lines += [
            f"  [{result.item_id}] {result.question}",
            f"      expected: {describe_expected(result)}",
            f"      got:      {describe_got(result)}",
            f"      cited:    {', '.join(dict.fromkeys(result.cited_doc_ids)) or '-'}"
            f"   evidence rank: {result.evidence_rank or '-'}",
        ]
    return "\n".join(lines)


def thinned(points: Sequence[ThresholdPoint], most: int) -> list[ThresholdPoint]:
    """At most `most` points, evenly spaced over the sweep, first and last kept."""
    if len(points) <= most:
        return list(points)
    step = (len(points) - 1) / (most - 1)
    return [points[round(i * step)] for i in range(most)]


def format_sweep(config: str, points: Sequence[ThresholdPoint], most: int = 25) -> str:
    """The refusal-threshold sweep of one configuration as an aligned table: the lowest
    threshold for each refusal recall reached (thinned to `most` rows)."""
    header = f"{config}: threshold  refusal R  wrongly refused  answer acc"
    lines = [header]
    for point in thinned(refusal_frontier(points), most):
        lines.append(
            f"{'':{len(config) + 2}}{point.threshold:>9.4f}  "
            f"{format_value(point.refusal_recall, 'ratio'):>9}  "
            f"{format_value(point.wrongly_refused, 'ratio'):>15}  "
            f"{format_value(point.answer_accuracy, 'ratio'):>10}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    images: tuple[Path, ...]


def write_json(run: EvalRun, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_reports(run: EvalRun, out_dir: Path) -> ReportFiles:
    """Write `<name>.json`, `<name>.md` and its PNG plots under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = write_json(run, out_dir / f"{run.name}.json")
    images = [plot_accuracy_by_type(run, out_dir / f"{run.name}-accuracy.png")]
    tradeoff = plot_refusal_tradeoff(run, out_dir / f"{run.name}-refusal.png")
    if tradeoff:
        images.append(tradeoff)
    markdown_path = out_dir / f"{run.name}.md"
    markdown_path.write_text(markdown_report(run, [p.name for p in images]), encoding="utf-8")
    return ReportFiles(json=json_path, markdown=markdown_path, images=tuple(images))


def markdown_report(run: EvalRun, image_names: Sequence[str]) -> str:
    header = ["config", "items", *(title for title, _, _ in COLUMNS)]
    rows = [
        [row.config, str(row.items)]
        + [format_value(getattr(row, name), kind) for _, name, kind in COLUMNS]
        for row in run.rows
    ]
    settings = run.settings
    parts = [
        f"# Eval report: {run.name}",
        "",
        f"- dataset: `{run.dataset}`, split: `{run.split}`",
        f"- commit: `{run.commit}`, date: {run.date}, run time: {run.elapsed_s:.1f} s",
        f"- embedder: `{settings.get('embedder')}`, top_k: {settings.get('top_k')}, "
        f"fusion: `{settings.get('fusion')}`, rerank_model: `{settings.get('rerank_model')}`, "
        f"refusal_threshold: {settings.get('refusal_threshold')}",
        "",
        "Retrieval metrics are over answerable items: a passage counts when it contains an "
        "evidence quote, or shares a contiguous run of at least 60% of the quote's length or "
        "20 characters with it (a chunk boundary may cut a quote). Answer accuracy: answered "
        "and every keyword in the answer. Citation accuracy: answered with a citation of an "
        "evidence document whose quote overlaps the evidence quote. Refusal P/R are over "
        "refusals and unanswerable items; `wrong ref` is the share of answerable items refused.",
        "",
        markdown_table(header, rows),
        "",
    ]
    parts += _breakdown_section(run, "type", lambda r: r.type)
    parts += _breakdown_section(run, "style", lambda r: r.style)
    parts += [f"![{name}]({name})" for name in image_names] + [""]
    parts += _failures_section(run)
    parts += [
        "## Settings",
        "",
        "```json",
        json.dumps(run.settings, ensure_ascii=False, indent=1),
        "```",
        "",
    ]
    return "\n".join(parts)


def _breakdown_section(run: EvalRun, label: str, key) -> list[str]:
    table = {config: accuracy_by(run.results[config], key) for config in run.configs}
    groups = sorted({group for by_group in table.values() for group in by_group})
    if not groups:
        return []
    lines = []
    for group in groups:
        count = next(by[group][1] for by in table.values() if group in by)
        cells = [
            f"{table[config][group][0]:.3f}" if group in table[config] else "-"
            for config in run.configs
        ]
        lines.append([group, str(count), *cells])
    return [
        f"## Answer accuracy by {label}",
        "",
        markdown_table([label, "items", *run.configs], lines),
        "",
    ]


def _failures_section(run: EvalRun) -> list[str]:
    parts = ["## Failures", ""]
    for config in run.configs:
        failed = failures(run.results[config])
        parts += [f"### {config} ({len(failed)} failures)", ""]
        if not failed:
            continue
        lines = [
            [
                r.item_id, r.question, describe_expected(r), describe_got(r, limit=200),
                ", ".join(dict.fromkeys(r.cited_doc_ids)) or "-", str(r.evidence_rank or "-"),
            ]
            for r in failed
        ]
        parts += [
            markdown_table(["id", "question", "expected", "got", "cited doc", "evidence rank"],
                           lines),
            "",
        ]
    return parts


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager, pyplot

    installed = {font.name for font in font_manager.fontManager.ttflist}
    # fall back to a CJK font for Chinese labels (type names, titles) where one is installed
    pyplot.rcParams["font.family"] = ["DejaVu Sans", *(f for f in CJK_FONTS if f in installed)]
    return pyplot


def plot_accuracy_by_type(run: EvalRun, path: Path) -> Path:
    """Grouped bars: answer accuracy per question type, one bar per configuration."""
    pyplot = _pyplot()
    table = {config: accuracy_by(run.results[config], lambda r: r.type) for config in run.configs}
    groups = sorted({group for by_group in table.values() for group in by_group}) or ["(none)"]
    width = 0.8 / max(len(run.configs), 1)
    figure, axes = pyplot.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4))
    for position, config in enumerate(run.configs):
        values = [table[config].get(group, (0.0, 0))[0] for group in groups]
        offsets = [i + (position - (len(run.configs) - 1) / 2) * width for i in range(len(groups))]
        axes.bar(offsets, values, width=width, label=config)
    axes.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("answer accuracy")
    axes.set_title(f"Answer accuracy by question type ({run.name})")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def plot_refusal_tradeoff(run: EvalRun, path: Path) -> Path | None:
    """Refusal recall against wrongly refused rate as the refusal threshold sweeps over the
    items' top evidence scores; None when the run has no unanswerable or no scored items."""
    curves = {}
    for config in run.configs:
        results = run.results[config]
        if not any(not r.answerable for r in results):
            continue
        points = [p for p in refusal_sweep(results)
                  if p.refusal_recall is not None and p.wrongly_refused is not None]
        if len(points) > 1:
            curves[config] = points
    if not curves:
        return None
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(5.5, 4.5))
    for config, points in curves.items():
        axes.plot([p.wrongly_refused for p in points], [p.refusal_recall for p in points],
                  marker=".", label=config)
    axes.set_xlabel("wrongly refused (answerable items)")
    axes.set_ylabel("refusal recall (unanswerable items)")
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(f"Refusal threshold trade-off ({run.name})")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def load_run(path: Path) -> EvalRun:
    return EvalRun.from_dict(json.loads(path.read_text(encoding="utf-8")))
