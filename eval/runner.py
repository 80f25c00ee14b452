"""The eval runner: every item through the same `Assistant` the API uses, once per
retrieval configuration, judged with `eval.metrics`.

One `Index` is loaded and shared; each configuration gets its own `Assistant` built from a
copy of the settings (`retrieval_mode`, and `rerank_model` kept only for "+rerank").
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corpus.settings import PROJECT_ROOT, Settings
from eval.metrics import (
    ConfigMetrics,
    ItemResult,
    citation_matches,
    evidence_rank,
    keywords_found,
    summarize,
)

BASE_CONFIGS = ("bm25", "dense", "hybrid")
RERANK_SUFFIX = "+rerank"

Progress = Callable[[str, int, int], None]  # (config, items done, items in all)


class EvidenceLike(Protocol):
    doc_id: str
    quote: str


class EvalItemLike(Protocol):
    """What the runner reads of `eval.dataset.EvalItem`."""

    id: str
    split: str
    type: str
    style: str
    question: str
    history: Sequence[str]
    answerable: bool
    answer: str
    keywords: Sequence[str]
    evidence: Sequence[EvidenceLike]


def default_configs(settings: Settings) -> list[str]:
    """bm25, dense, hybrid, and hybrid+rerank when a rerank model is configured."""
    configs = list(BASE_CONFIGS)
    if settings.qa.rerank_model:
        configs.append("hybrid" + RERANK_SUFFIX)
    return configs


def parse_configs(text: str | None, settings: Settings) -> list[str]:
    """Comma-separated configuration names, checked.

    :raises ValueError: for an unknown name, or "+rerank" without settings.qa.rerank_model.
    """
    if not text:
        return default_configs(settings)
    configs = [name.strip() for name in text.split(",") if name.strip()]
    for config in configs:
        config_settings(settings, config)
    if not configs:
        raise ValueError("no configuration given")
    return configs


def config_settings(settings: Settings, config: str) -> Settings:
    """The settings of one configuration ("bm25", "dense", "hybrid", "<mode>+rerank").

    :raises ValueError: for an unknown name, or "+rerank" without settings.qa.rerank_model.
    """
    mode, plus, extra = config.partition("+")
    if mode not in BASE_CONFIGS or (plus and extra != "rerank"):
        known = ", ".join([*BASE_CONFIGS, "hybrid" + RERANK_SUFFIX])
        raise ValueError(f"unknown configuration {config!r} (known: {known})")
    if plus and not settings.qa.rerank_model:
        raise ValueError(f"{config!r} needs settings.qa.rerank_model (POLICYQA_RERANK_MODEL)")
    update: dict[str, Any] = {"retrieval_mode": mode}
    if not plus:
        update["rerank_model"] = None
    return settings.model_copy(update=update)


def evidence_score(answer: Any) -> float | None:
    """The score the refusal decision compares with `refusal_threshold`: the top retrieved
    passage's score (what `Answer.passages[0].score` carries), else the top citation's."""
    extra = getattr(answer, "extra", None) or {}
    if isinstance(extra.get("evidence_score"), (int, float)):
        return float(extra["evidence_score"])
    if answer.passages:
        return float(answer.passages[0].score)
    if answer.citations:
        return float(answer.citations[0].score)
    return None


def judge(item: EvalItemLike, answer: Any) -> ItemResult:
    """Judge one `qa.Answer` against its eval item."""
    quotes = [evidence.quote for evidence in item.evidence]
    rank = evidence_rank([p.quote for p in answer.passages], quotes) if item.answerable else None
    answer_correct = bool(
        item.answerable
        and answer.answered
        and keywords_found(answer.answer, item.keywords, expected_answer=item.answer)
    )
    citation_correct = bool(
        item.answerable
        and answer.answered
        and citation_matches(
            [(c.doc_id, c.quote) for c in answer.citations],
            [(e.doc_id, e.quote) for e in item.evidence],
        )
    )
    return ItemResult(
        **_item_fields(item),
        answered=bool(answer.answered),
        answer=answer.answer,
        span=answer.span,
        query=answer.query,
        cited_doc_ids=tuple(c.doc_id for c in answer.citations),
        cited_sections=tuple(c.section for c in answer.citations),
        evidence_rank=rank,
        answer_correct=answer_correct,
        citation_correct=citation_correct,
        top_score=evidence_score(answer),
        latency_ms=float(answer.latency_ms),
    )


def rejected(item: EvalItemLike, message: str) -> ItemResult:
    """The result of a question the assistant rejected (QuestionError): counted as not
    answered, with the message kept for the failure list."""
    return ItemResult(
        **_item_fields(item),
        answered=False, answer="", span=None, query=item.question, cited_doc_ids=(),
        cited_sections=(), evidence_rank=None, answer_correct=False, citation_correct=False,
        top_score=None, latency_ms=0.0, error=message,
    )


def _item_fields(item: EvalItemLike) -> dict[str, Any]:
    return {
        "item_id": item.id,
        "split": item.split,
        "type": item.type,
        "style": item.style,
        "question": item.question,
        "history": tuple(item.history),
        "answerable": bool(item.answerable),
        "expected_answer": item.answer or "",
        "keywords": tuple(item.keywords),
    }


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """`git rev-parse --short HEAD`, plus "+dirty" when the tree has changes; "unknown"
    outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
            text=True, check=True, timeout=10,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
            check=True, timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if changes else "")


@dataclass(frozen=True)
class EvalRun:
    """One eval run: the summary rows, every judged item, and what produced them."""

    name: str  # e.g. "seed-test": file stem of the reports
    split: str
    dataset: str
    configs: tuple[str, ...]
    rows: tuple[ConfigMetrics, ...]
    results: dict[str, tuple[ItemResult, ...]] = field(compare=False)
    commit: str = "unknown"
    date: str = ""
    settings: dict = field(default_factory=dict, compare=False)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "split": self.split,
            "dataset": self.dataset,
            "commit": self.commit,
            "date": self.date,
            "elapsed_s": round(self.elapsed_s, 2),
            "configs": list(self.configs),
            "metrics": [asdict(row) for row in self.rows],
            "settings": self.settings,
            "results": {
                config: [result.to_dict() for result in results]
                for config, results in self.results.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EvalRun":
        return cls(
            name=data["name"],
            split=data["split"],
            dataset=data["dataset"],
            configs=tuple(data["configs"]),
            rows=tuple(ConfigMetrics(**row) for row in data["metrics"]),
            results={
                config: tuple(ItemResult.from_dict(r) for r in results)
                for config, results in data["results"].items()
            },
            commit=data.get("commit", "unknown"),
            date=data.get("date", ""),
            settings=data.get("settings", {}),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
        )


class EvalRunner:
    """Runs eval items through one `Assistant` per configuration over one shared index."""

    def __init__(
        self,
        index: Any,
        settings: Settings,
        assistant_factory: Callable[[Any, Settings], Any] | None = None,
    ):
        self.index = index
        self.settings = settings
        self._assistant_factory = assistant_factory or _default_assistant_factory

    def assistant_for(self, config: str) -> Any:
        return self._assistant_factory(self.index, config_settings(self.settings, config))

    def run_config(
        self, config: str, items: Sequence[EvalItemLike], progress: Progress | None = None
    ) -> list[ItemResult]:
        """Ask every item (with its history) and judge the answers."""
        from qa.errors import QuestionError

        assistant = self.assistant_for(config)
        # hit@5 needs at least five passages whatever top_k the service is set to
        top_k = None if self.settings.qa.top_k >= 5 else 5
        results = []
        for done, item in enumerate(items, start=1):
            try:
                answer = assistant.ask(item.question, history=tuple(item.history), top_k=top_k)
            except QuestionError as error:
                results.append(rejected(item, error.message))
            else:
                results.append(judge(item, answer))
            if progress:
                progress(config, done, len(items))
        return results

    def run(
        self,
        items: Sequence[EvalItemLike],
        configs: Sequence[str],
        name: str,
        split: str,
        dataset: str,
        progress: Progress | None = None,
    ) -> EvalRun:
        started = time.perf_counter()
        results = {config: tuple(self.run_config(config, items, progress)) for config in configs}
        return EvalRun(
            name=name,
            split=split,
            dataset=dataset,
            configs=tuple(configs),
            rows=tuple(summarize(config, results[config]) for config in configs),
            results=results,
            commit=git_commit(),
            date=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            settings=self.settings.flat_dump(mode="json"),
            elapsed_s=time.perf_counter() - started,
        )


def _default_assistant_factory(index: Any, settings: Settings) -> Any:
    from qa import Assistant

    return Assistant.over(index, settings)


def display_path(path: Path) -> str:
    """The path relative to the project root where it can be (reports are committed, and
    an absolute path names someone's machine)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        pass
    try:
        return str(Path("..") / path.relative_to(PROJECT_ROOT.parent))
    except ValueError:
        return str(path)


def run_name(dataset_path: Path, split: str) -> str:
    """Report file stem: "seed_qa.jsonl" and "test" give "seed-test"."""
    stem = dataset_path.name.split(".")[0]
    stem = stem.removesuffix("_qa").replace("_", "-")
    return f"{stem}-{split}"


def load_or_build_index(settings: Settings, progress: bool = True) -> Any:
    """Load the index at settings.index.index_dir, building it first when the directory holds
    none.

    :raises index.IndexLoadError: when an index is there but cannot be used (corrupt, or
        built with other settings): rebuilding someone's index silently would hide that.
    """
    from index import Index, build_index

    index_dir = Path(settings.index.index_dir)
    if not index_dir.is_dir() or not any(index_dir.iterdir()):
        build_index(settings, progress=progress)
    return Index.load(index_dir, settings)
