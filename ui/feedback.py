"""Thumbs up/down on answers, kept in a local SQLite file (settings.service.feedback_db).

Thumbs-down items are exported as candidate eval items in the eval set's JSONL format, for
staff to complete (answerable, answer, evidence) and add to the eval set. The format is
written out here rather than imported from `eval`, which sits outside the layer chain.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

Rating = Literal["up", "down"]
RATINGS: tuple[str, ...] = ("up", "down")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    question TEXT NOT NULL,
    history TEXT NOT NULL,
    answer TEXT NOT NULL,
    citations TEXT NOT NULL,
    comment TEXT,
    source TEXT NOT NULL,
    answer_id TEXT
)
"""


@dataclass(frozen=True)
class FeedbackItem:
    id: int
    created_at: str  # ISO 8601, UTC
    rating: Rating
    question: str
    history: tuple[str, ...]
    answer: dict  # Answer.to_dict() as shown to the user
    citations: tuple[dict, ...]  # answer["citations"], kept apart for querying
    comment: str | None
    source: str  # "chat" or "api"
    answer_id: str | None = None  # the id /api/ask issued with the answer (API feedback)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "rating": self.rating,
            "question": self.question,
            "history": list(self.history),
            "answer": self.answer,
            "citations": list(self.citations),
            "comment": self.comment,
            "source": self.source,
            "answer_id": self.answer_id,
        }

    def to_eval_candidate(self) -> dict:
        """This item as an eval-set line with the fields staff must fill left blank."""
        return {
            "id": f"feedback-{self.id:05d}",
            "split": "dev",
            "type": "",
            "style": "user",
            "question": self.question,
            "history": list(self.history),
            "answerable": None,
            "answer": "",
            "keywords": [],
            "evidence": [],
            "bad_answer": {
                "answer": self.answer.get("answer", ""),
                "answered": self.answer.get("answered"),
                "query": self.answer.get("query", ""),
                "citations": [
                    {
                        "doc_id": citation.get("doc_id"),
                        "title": citation.get("title"),
                        "section": citation.get("section"),
                        "chunk_id": citation.get("chunk_id"),
                        "quote": citation.get("quote"),
                    }
                    for citation in self.citations
                ],
                "comment": self.comment,
                "rated_at": self.created_at,
            },
        }


class FeedbackStore:
    """The feedback table. Opens a connection per call, so it is safe to share between
    the server's threads; SQLite serialises the writes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=10)
        try:
            connection.execute(_SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(feedback)")}
            if "answer_id" not in columns:  # a database written before answer ids existed
                with connection:
                    connection.execute("ALTER TABLE feedback ADD COLUMN answer_id TEXT")
            with connection:
                yield connection
        finally:
            connection.close()

    def add(
        self,
        rating: Rating,
        question: str,
        answer: dict,
        history: Sequence[str] = (),
        comment: str | None = None,
        source: str = "chat",
        answer_id: str | None = None,
    ) -> FeedbackItem:
        """Store one rating of `answer` (an `Answer.to_dict()`, as the server gave it).

        :raises ValueError: when `rating` is not "up" or "down".
        """
        if rating not in RATINGS:
            raise ValueError(f"rating must be one of {RATINGS}, not {rating!r}")
        created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        citations = list(answer.get("citations") or [])
        with self._connect() as connection:
            cursor = connection.execute(
                "INSERT INTO feedback (created_at, rating, question, history, answer, citations,"
                " comment, source, answer_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    created_at,
                    rating,
                    question,
                    json.dumps(list(history), ensure_ascii=False),
                    json.dumps(answer, ensure_ascii=False),
                    json.dumps(citations, ensure_ascii=False),
                    comment,
                    source,
                    answer_id,
                ),
            )
            row_id = int(cursor.lastrowid)
        return FeedbackItem(
            id=row_id,
            created_at=created_at,
            rating=rating,
            question=question,
            history=tuple(history),
            answer=answer,
            citations=tuple(citations),
            comment=comment,
            source=source,
            answer_id=answer_id,
        )

    def retract(self, item_id: int) -> bool:
        """Remove one item (a rating the user took back); False when there was none."""
        with self._connect() as connection:
            removed = connection.execute("DELETE FROM feedback WHERE id = ?", (int(item_id),))
            return removed.rowcount > 0

    def items(self, rating: Rating | None = None, limit: int | None = None) -> list[FeedbackItem]:
        """Stored items, newest first, optionally only one rating."""
        if not self.path.exists():
            return []
        query = "SELECT * FROM feedback"
        parameters: list = []
        if rating is not None:
            query += " WHERE rating = ?"
            parameters.append(rating)
        query += " ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            parameters.append(int(limit))
        with self._connect() as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(query, parameters).fetchall()
        return [
            FeedbackItem(
                id=row["id"],
                created_at=row["created_at"],
                rating=row["rating"],
                question=row["question"],
                history=tuple(json.loads(row["history"])),
                answer=json.loads(row["answer"]),
                citations=tuple(json.loads(row["citations"])),
                comment=row["comment"],
                source=row["source"],
                answer_id=row["answer_id"],
            )
            for row in rows
        ]

    def export_candidates(self, path: Path) -> int:
        """Write the thumbs-down items, oldest first, as eval-set JSONL; returns how many."""
        candidates = [item.to_eval_candidate() for item in reversed(self.items(rating="down"))]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for candidate in candidates:
                handle.write(json.dumps(candidate, ensure_ascii=False) + "\n")
        return len(candidates)


@dataclass(frozen=True)
class IssuedAnswer:
    """An answer as /api/ask gave it, with what it answered."""

    question: str
    history: tuple[str, ...]
    answer: dict  # Answer.to_dict()


class IssuedAnswers:
    """The answers /api/ask handed out lately, by the `answer_id` sent with each, so that
    /api/feedback stores the server's own copy of the rated answer, never text a client
    sends back.

    In memory only (questions are not kept on disk unless rated); thread-safe. Holds at most
    `max_entries`, the oldest dropped first, each for `ttl_s` seconds.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl_s: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries and ttl_s must be positive")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[float, IssuedAnswer]] = OrderedDict()

    def issue(self, question: str, history: Sequence[str], answer: dict) -> str:
        """Keeps `answer` and returns its new id (32 hex digits, unguessable)."""
        answer_id = uuid.uuid4().hex
        now = self._clock()
        with self._lock:
            self._answers[answer_id] = (now, IssuedAnswer(question, tuple(history), answer))
            while self._answers:
                oldest_id, (issued_at, _) = next(iter(self._answers.items()))
                if now - issued_at <= self.ttl_s and len(self._answers) <= self.max_entries:
                    break
                del self._answers[oldest_id]
        return answer_id

    def get(self, answer_id: str) -> IssuedAnswer | None:
        """The answer issued as `answer_id`; None when unknown or expired."""
        with self._lock:
            entry = self._answers.get(answer_id)
            if entry is None or self._clock() - entry[0] > self.ttl_s:
                return None
            return entry[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)
