"""CMRC 2018 as an open-domain benchmark nobody on the team wrote.

Cui et al., "A Span-Extraction Dataset for Chinese Machine Reading Comprehension",
EMNLP-IJCNLP 2019 (ymcui/cmrc2018), CC BY-SA 4.0. The development set's 848 paragraphs form
one corpus (one `Document` per paragraph, one section with an empty path); every question is
asked of the whole corpus through the same `Assistant` the API uses. We measure whether the
right paragraph is retrieved (hit@1/5, MRR over chunks, any chunk of the paragraph counting),
whether the answer contains a gold span, and the official EM / F1 of the shortest answer the
system gives (`Answer.span` when set, else the answer text).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corpus.models import Document, Section
from corpus.settings import Settings
from eval.metrics import char_f1, contains_any, exact_match, mean_reciprocal_rank, percentile
from eval.report import format_value, markdown_table, text_table
from eval.runner import config_settings, display_path, git_commit

ATTRIBUTION = (
    "CMRC 2018 development set: Cui et al., \"A Span-Extraction Dataset for Chinese Machine "
    "Reading Comprehension\", EMNLP-IJCNLP 2019 (github.com/ymcui/cmrc2018), "
    "licensed CC BY-SA 4.0."
)
BM25_BASELINE_HIT_AT_1 = 0.957  # BM25 over jieba tokens, paragraph retrieval
CMRC_CONFIGS = ("bm25", "dense", "hybrid")

Progress = Callable[[str, int, int], None]


class CmrcFormatError(ValueError):
    """The file is not a SQuAD-format CMRC data set."""


@dataclass(frozen=True)
class CmrcParagraph:
    paragraph_id: str
    title: str
    context: str


@dataclass(frozen=True)
class CmrcQuestion:
    question_id: str
    paragraph_id: str
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class CmrcSet:
    paragraphs: tuple[CmrcParagraph, ...]
    questions: tuple[CmrcQuestion, ...]


def load_cmrc(path: Path) -> CmrcSet:
    """Read a SQuAD-format file (`{"data": [{"title", "paragraphs": [{"id", "context",
    "qas": [{"id", "question", "answers": [{"text"}]}]}]}]}`).

    :raises FileNotFoundError: when the file is absent.
    :raises CmrcFormatError: when it is not valid JSON of that shape.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CmrcFormatError(f"{path}: not a JSON file ({error})") from None
    articles = data.get("data") if isinstance(data, dict) else data
    if not isinstance(articles, list):
        raise CmrcFormatError(f"{path}: expected a SQuAD-format object with a 'data' list")
    paragraphs: list[CmrcParagraph] = []
    questions: list[CmrcQuestion] = []
    try:
        for article_number, article in enumerate(articles):
            for paragraph_number, paragraph in enumerate(article["paragraphs"]):
                paragraph_id = str(
                    paragraph.get("id") or article.get("id") or
                    f"P{article_number}_{paragraph_number}"
                )
                title = str(paragraph.get("title") or article.get("title") or "")
                paragraphs.append(CmrcParagraph(paragraph_id, title, str(paragraph["context"])))
                for qa in paragraph["qas"]:
                    answers = tuple(
                        dict.fromkeys(str(a["text"]) for a in qa["answers"] if str(a["text"]))
                    )
                    questions.append(
                        CmrcQuestion(str(qa["id"]), paragraph_id, str(qa["question"]), answers)
                    )
    except (KeyError, TypeError, AttributeError) as error:
        raise CmrcFormatError(f"{path}: unexpected structure ({error!r})") from None
    if len({p.paragraph_id for p in paragraphs}) != len(paragraphs):
        raise CmrcFormatError(f"{path}: paragraph ids are not unique")
    return CmrcSet(tuple(paragraphs), tuple(questions))


def paragraph_documents(cmrc_set: CmrcSet, source_file: str) -> list[Document]:
    """One Document per paragraph: doc_id = paragraph id, one section spanning the text with
    an empty path (the paragraphs have no headings)."""
    return [
        Document(
            doc_id=paragraph.paragraph_id,
            title=paragraph.title,
            source_file=source_file,
            text=paragraph.context,
            sections=(Section(path=(), char_span=(0, len(paragraph.context))),),
            kind="encyclopedia paragraph",
        )
        for paragraph in cmrc_set.paragraphs
    ]


@dataclass(frozen=True)
class CmrcQuestionResult:
    question_id: str
    paragraph_id: str
    rank: int | None  # 1-based rank of the first passage from the right paragraph
    answered: bool
    prediction: str  # the shortest answer the system gave (span, else answer text)
    contains_gold: bool  # the full answer text contains a gold span
    exact_match: float
    f1: float
    latency_ms: float


@dataclass(frozen=True)
class CmrcConfigMetrics:
    config: str
    questions: int
    hit_at_1: float | None
    hit_at_5: float | None
    mrr: float | None
    answered: float | None
    contains_gold: float | None
    exact_match: float | None
    f1: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


def judge_cmrc(question: CmrcQuestion, answer: Any) -> CmrcQuestionResult:
    rank = next(
        (n for n, passage in enumerate(answer.passages, start=1)
         if passage.doc_id == question.paragraph_id),
        None,
    )
    prediction = (answer.span or answer.answer) if answer.answered else ""
    return CmrcQuestionResult(
        question_id=question.question_id,
        paragraph_id=question.paragraph_id,
        rank=rank,
        answered=bool(answer.answered),
        prediction=prediction,
        contains_gold=bool(answer.answered and contains_any(answer.answer, question.answers)),
        exact_match=exact_match(prediction, question.answers) if prediction else 0.0,
        f1=char_f1(prediction, question.answers) if prediction else 0.0,
        latency_ms=float(answer.latency_ms),
    )


def summarize_cmrc(config: str, results: Sequence[CmrcQuestionResult]) -> CmrcConfigMetrics:
    count = len(results)

    def share(values) -> float | None:
        return sum(values) / count if count else None

    ranks = [r.rank for r in results]
    latencies = [r.latency_ms for r in results]
    return CmrcConfigMetrics(
        config=config,
        questions=count,
        hit_at_1=share(1 for rank in ranks if rank == 1),
        hit_at_5=share(1 for rank in ranks if rank is not None and rank <= 5),
        mrr=mean_reciprocal_rank(ranks),
        answered=share(r.answered for r in results),
        contains_gold=share(r.contains_gold for r in results),
        exact_match=share(r.exact_match for r in results),
        f1=share(r.f1 for r in results),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
    )


@dataclass(frozen=True)
class CmrcRun:
    dataset: str
    paragraphs: int
    questions: int
    rows: tuple[CmrcConfigMetrics, ...]
    results: dict[str, tuple[CmrcQuestionResult, ...]] = field(compare=False)
    commit: str = "unknown"
    date: str = ""
    settings: dict = field(default_factory=dict, compare=False)
    index_build_s: float = 0.0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "benchmark": "CMRC 2018 dev (open-domain over all paragraphs)",
            "attribution": ATTRIBUTION,
            "dataset": self.dataset,
            "paragraphs": self.paragraphs,
            "questions": self.questions,
            "commit": self.commit,
            "date": self.date,
            "index_build_s": round(self.index_build_s, 1),
            "elapsed_s": round(self.elapsed_s, 1),
            "bm25_baseline_hit_at_1": BM25_BASELINE_HIT_AT_1,
            "metrics": [asdict(row) for row in self.rows],
            "settings": self.settings,
            # compact rows, one per question: 3 x 3,219 objects would make a 4 MB file;
            # the predictions go to <stem>-predictions.jsonl (see write_cmrc_reports)
            "result_columns": list(RESULT_COLUMNS),
            "results": {
                config: [[_rounded(getattr(result, name)) for name in RESULT_COLUMNS]
                         for result in results]
                for config, results in self.results.items()
            },
        }

    def prediction_lines(self) -> list[str]:
        """One JSON line per question and configuration, with the prediction text."""
        return [
            json.dumps({"config": config, **asdict(result)}, ensure_ascii=False)
            for config, results in self.results.items()
            for result in results
        ]


RESULT_COLUMNS = ("question_id", "rank", "answered", "contains_gold", "exact_match", "f1")


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


class CmrcBenchmark:
    """Indexes the CMRC paragraphs into their own index dir and asks every question."""

    def __init__(self, settings: Settings, cmrc_set: CmrcSet, dataset_path: Path,
                 index_dir: Path):
        self.settings = settings.model_copy(update={"index_dir": Path(index_dir)})
        self.cmrc_set = cmrc_set
        self.dataset_path = Path(dataset_path)
        self.index_build_s = 0.0

    def load_index(self, progress: bool = True) -> Any:
        """The CMRC index, built when absent or built from other settings or paragraphs."""
        from index import Index, IndexLoadError, build_index

        index_dir = self.settings.index.index_dir
        wanted = {paragraph.paragraph_id for paragraph in self.cmrc_set.paragraphs}
        try:
            index = Index.load(index_dir, self.settings)
        except IndexLoadError:
            pass  # absent, or built with other settings: build below
        else:
            if {document.doc_id for document in index.documents} == wanted:
                return index
        started = time.perf_counter()
        documents = paragraph_documents(self.cmrc_set, self.dataset_path.name)
        build_index(self.settings, progress=progress, documents=documents)
        self.index_build_s = time.perf_counter() - started
        return Index.load(index_dir, self.settings)

    def run(
        self,
        configs: Sequence[str] = CMRC_CONFIGS,
        limit: int | None = None,
        progress: Progress | None = None,
        index: Any = None,
    ) -> CmrcRun:
        from qa import Assistant
        from qa.errors import QuestionError

        started = time.perf_counter()
        index = index if index is not None else self.load_index()
        questions = self.cmrc_set.questions[:limit] if limit else self.cmrc_set.questions
        results: dict[str, tuple[CmrcQuestionResult, ...]] = {}
        for config in configs:
            assistant = Assistant.over(index, config_settings(self.settings, config))
            judged = []
            for done, question in enumerate(questions, start=1):
                try:
                    answer = assistant.ask(question.question, top_k=max(5, self.settings.qa.top_k))
                except QuestionError:
                    judged.append(CmrcQuestionResult(question.question_id, question.paragraph_id,
                                                     None, False, "", False, 0.0, 0.0, 0.0))
                else:
                    judged.append(judge_cmrc(question, answer))
                if progress:
                    progress(config, done, len(questions))
            results[config] = tuple(judged)
        return CmrcRun(
            dataset=display_path(self.dataset_path),
            paragraphs=len(self.cmrc_set.paragraphs),
            questions=len(questions),
            rows=tuple(summarize_cmrc(config, results[config]) for config in configs),
            results=results,
            commit=git_commit(),
            date=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            settings=self.settings.flat_dump(mode="json"),
            index_build_s=self.index_build_s,
            elapsed_s=time.perf_counter() - started,
        )


CMRC_COLUMNS = (
    ("hit@1", "hit_at_1", "ratio"),
    ("hit@5", "hit_at_5", "ratio"),
    ("MRR", "mrr", "ratio"),
    ("answered", "answered", "ratio"),
    ("has gold", "contains_gold", "ratio"),
    ("EM", "exact_match", "ratio"),
    ("F1", "f1", "ratio"),
    ("p50 ms", "latency_p50_ms", "ms"),
    ("p95 ms", "latency_p95_ms", "ms"),
)


def cmrc_table_lines(rows: Sequence[CmrcConfigMetrics]) -> tuple[list[str], list[list[str]]]:
    header = ["config", "questions", *(title for title, _, _ in CMRC_COLUMNS)]
    lines = [
        [row.config, str(row.questions)]
        + [format_value(getattr(row, name), kind) for _, name, kind in CMRC_COLUMNS]
        for row in rows
    ]
    return header, lines


def format_cmrc_table(rows: Sequence[CmrcConfigMetrics]) -> str:
    return text_table(*cmrc_table_lines(rows))


def write_cmrc_reports(run: CmrcRun, out_dir: Path, stem: str = "cmrc2018") -> tuple[Path, Path]:
    """Write `<stem>.json` (metrics, settings, compact per-question rows), `<stem>.md`, and
    `<stem>-predictions.jsonl` (every prediction; large, for error analysis)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(_json_row_per_line(run.to_dict(), "results"), encoding="utf-8")
    (out_dir / f"{stem}-predictions.jsonl").write_text(
        "\n".join(run.prediction_lines()) + "\n", encoding="utf-8")
    header, lines = cmrc_table_lines(run.rows)
    settings = run.settings
    markdown = "\n".join([
        "# CMRC 2018 (dev), open-domain over all paragraphs",
        "",
        ATTRIBUTION,
        "",
        f"- data: `{run.dataset}`: {run.paragraphs} paragraphs, {run.questions} questions asked",
        f"- commit: `{run.commit}`, date: {run.date}, run time: {run.elapsed_s:.0f} s"
        + (f" (index build {run.index_build_s:.0f} s)" if run.index_build_s else ""),
        f"- embedder: `{settings.get('embedder')}`, chunk_size: {settings.get('chunk_size')}, "
        f"top_k: {settings.get('top_k')}, fusion: `{settings.get('fusion')}`",
        "",
        "Each paragraph is one document; every question is asked of the whole corpus. hit@k and "
        "MRR: rank of the first retrieved passage from the question's paragraph (any of its "
        "chunks). `has gold`: the answer text contains a gold span (punctuation and whitespace "
        "removed). EM and F1 follow the official CMRC script (punctuation removed, Chinese "
        "characters as tokens, F1 from the longest common run, best over the gold answers), "
        "computed on the shortest answer given: `Answer.span` when set, else the answer text. "
        "A refused question scores 0. The system is extractive over sentences, so EM is "
        "expected to be low; `has gold` is the fairer measure of the answer step.",
        "",
        f"Reference point: BM25 over jieba tokens reaches paragraph hit@1 ≈ "
        f"{BM25_BASELINE_HIT_AT_1}.",
        "",
        markdown_table(header, lines),
        "",
        "Reproduce: `policyqa cmrc` (add `--limit N` for a quick run).",
        "",
    ])
    markdown_path = out_dir / f"{stem}.md"
    markdown_path.write_text(markdown, encoding="utf-8")
    return json_path, markdown_path


def _json_row_per_line(payload: dict, rows_key: str) -> str:
    """JSON of `payload` indented as usual, except that `payload[rows_key]` (config -> rows)
    is written one row per line: readable and diffable without a line per number."""
    head = {key: value for key, value in payload.items() if key != rows_key}
    blocks = [
        f"  {json.dumps(config)}: [\n"
        + ",\n".join("   " + json.dumps(row, ensure_ascii=False) for row in rows)
        + "\n  ]"
        for config, rows in payload[rows_key].items()
    ]
    text = json.dumps(head, ensure_ascii=False, indent=1)
    body = f' {json.dumps(rows_key)}: {{\n' + ",\n".join(blocks) + "\n }"
    return text.removesuffix("\n}") + ",\n" + body + "\n}\n"
