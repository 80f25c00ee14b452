"""Pydantic models at the HTTP edge: what /api/* accepts and returns, with the descriptions
and examples that /docs shows.

Limits that depend on settings (question length, history turns) are checked in `ui.api`,
where the settings are known; the static bounds here only stop absurd input early.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corpus.models import Document, DocumentInfo, DocumentMetadata, optional_text
from corpus.settings import settings  # the limits the schema states are the configured ones

EXAMPLE_QUESTION = "虹桥国际开放枢纽包括哪些区域？"
# The seed sentence the /api/ask response example quotes (document 003-1).
EXAMPLE_AREA_SENTENCE = (
    "商务区全域环绕虹桥综合交通枢纽，包含长宁区（新泾镇、程家桥街道）、闵"
    "行区（新虹街道、华漕镇、七宝镇部分）、青浦区（徐泾镇、华新镇部分）、"
    "嘉定区（江桥镇、真新街道部分）四区街镇，面积 151.4 平方公里。"
)
MAX_DOCUMENT_FILTER = 50  # more ids than any corpus we serve has documents


def has_lone_surrogate(text: str) -> bool:
    """True when `text` holds a UTF-16 surrogate half (JSON "\\ud800"), which cannot be encoded."""
    return any("\ud800" <= char <= "\udfff" for char in text)


def _reject_surrogates(value: str) -> str:
    if has_lone_surrogate(value):
        raise ValueError("lone surrogate")
    return value


# Not blank as qa.assistant.clean_question sees it: a character that is neither a space nor
# one of the controls it drops.
NOT_BLANK = r"[^\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]"


class AskRequest(BaseModel):
    """A question, with the earlier questions of the conversation for follow-ups."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"question": EXAMPLE_QUESTION},
                {
                    "question": "它的总体目标是什么？",
                    "history": [EXAMPLE_QUESTION],
                    "top_k": 3,
                    "documents": ["001"],
                    "in_force_only": True,
                },
            ]
        },
    )

    question: str = Field(
        description="用户的问题（中文）。The user's question; at most settings.qa.max_question_chars "
        "characters, not blank.",
        examples=[EXAMPLE_QUESTION],
        # "not blank" in the schema too: one character that is not a space or a control
        pattern=NOT_BLANK,
        max_length=settings.qa.max_question_chars,
    )
    history: list[Annotated[str, Field(max_length=settings.qa.max_question_chars)]] = Field(
        default_factory=list,
        max_length=settings.qa.max_history_turns,
        description="本次对话中此前的用户问题，按时间顺序。Earlier user questions of this "
        "conversation, oldest first, used to resolve follow-ups; at most "
        "settings.qa.max_history_turns items.",
        examples=[[EXAMPLE_QUESTION]],
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=20,
        description="返回的相关段落数。How many retrieved passages to return (1-20); "
        "settings.qa.top_k when omitted.",
        examples=[5],
    )
    documents: list[str] | None = Field(
        default=None,
        max_length=MAX_DOCUMENT_FILTER,
        description="只在这些文档中查找（文档编号，见 GET /api/documents）。Restrict the "
        "search to these doc_ids; all documents when omitted.",
        examples=[["001", "004"]],  # ids of the bundled corpus: the example must be valid
    )
    in_force_only: bool = Field(
        default=False,
        strict=True,  # a boolean, as the schema says: not 0, 1 or "yes"
        description="只使用现行有效的政策文件。Only use documents whose status is in force.",
    )

    @field_validator("question")
    @classmethod
    def _question_encodable(cls, value: str) -> str:
        return _reject_surrogates(value)

    @field_validator("history", "documents")
    @classmethod
    def _items_encodable(cls, values: list[str] | None) -> list[str] | None:
        for value in values or ():
            _reject_surrogates(value)
        return values


class CitationOut(BaseModel):
    """A quoted passage with where it comes from."""

    model_config = ConfigDict(extra="allow")

    title: str = Field(description="文档标题。Document title.")
    section: str = Field(description="章节路径，以 ' > ' 分隔。Section path joined by ' > '.")
    quote: str = Field(
        description="引用原文：答案引用为所引句子，检索段落为整段。The quoted text: the cited "
        "sentence(s) for an answer citation, the whole chunk for a retrieved passage."
    )
    source_file: str = Field(description="来源文件名。Source file name in corpus/documents.")
    doc_id: str = Field(description="文档编号。Document id.", examples=["001"])
    chunk_id: str = Field(description="段落编号（内容哈希）。Content-hashed chunk id.")
    score: float = Field(description="检索得分，越高越相关。Retrieval score, higher is closer.")
    highlights: list[list[int]] = Field(
        description="答案在 quote 中的位置 [起, 止)。[start, end) offsets of the answer in quote.",
        examples=[[[0, 12]]],
    )
    note: str | None = Field(
        default=None,
        description="关于来源的提示，如“研究报告，非政策文件”。A caveat about the source.",
    )


class AskResponse(BaseModel):
    """The answer: `Answer.to_dict()` of the QA layer, with the `answer_id` to rate it by."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "answer": EXAMPLE_AREA_SENTENCE,
                    "answered": True,
                    "query": "虹桥商务区面积多大？",
                    "understood_as": "虹桥商务区面积多大？",
                    "citations": [
                        {
                            "title": "虹桥国际中央商务区产业发展规划",
                            "section": "一、发展基础",
                            "quote": EXAMPLE_AREA_SENTENCE,
                            "source_file": "003_acd3c122fbf1e800.txt",
                            "doc_id": "003-1",
                            "chunk_id": "999e86619fb610f1",
                            "score": 0.91,
                            "highlights": [[91, 101]],
                            "note": None,
                        }
                    ],
                    "passages": [],
                    "span": "151.4 平方公里",
                    "latency_ms": 14.2,
                    "notice": None,
                    "confidence": 0.93,
                    "confidence_label": "高",
                    "answer_id": "5f0c3a9e2b7d4c1e8a6f9b0d3e2c1a47",
                }
            ]
        },
    )

    answer: str = Field(
        description="答案（摘自文档）；未找到时为中文说明。The extracted answer, or a Chinese "
        "explanation when the documents do not answer."
    )
    answered: bool = Field(description="文档是否回答了问题。False when the assistant refused.")
    query: str = Field(
        description="实际检索用的问题（追问时会结合上文改写）。The query actually searched, "
        "rewritten from the history for follow-ups."
    )
    understood_as: str = Field(
        default="",
        description="按上下文理解的完整问题（追问放回上一问中，如“虹桥国际中央商务区涉及哪几个区？”）。"
        "The question as understood: a follow-up put back into the earlier question.",
    )
    citations: list[CitationOut] = Field(description="答案的出处。Citations of the answer.")
    passages: list[CitationOut] = Field(
        description="最相关的检索段落（拒答时也会列出）。Closest retrieved passages, also "
        "listed when refused."
    )
    span: str | None = Field(
        default=None,
        description="答案中更精确的片段（如所问的数字），位于 answer 和 citations[0].quote 之中，"
        "其位置见 citations[0].highlights。The short answer inside `answer` and the first "
        "citation's quote, where `highlights` marks it.",
        examples=["151.4 平方公里"],
    )
    latency_ms: float = Field(description="处理耗时（毫秒）。Time spent answering, ms.")
    notice: str | None = Field(
        default=None, description="关于输入的提示。A message about the input itself."
    )
    confidence: float = Field(
        ge=0.0,
        le=1.0,
        description="置信度（0 到 1）：阅读模型判断所引段落回答了问题的概率；拒答时为最接近段落的"
        "概率。The reader's probability that the cited passage answers the question; for a "
        "refusal, that of the closest passage.",
        examples=[0.93],
    )
    confidence_label: str = Field(
        description="置信度等级：高、中或低，供用户阅读。The confidence as users read it: "
        "高 (high), 中 (medium) or 低 (low).",
        examples=["高"],
    )
    answer_id: str | None = Field(
        default=None,
        description="答案编号：评价答案（POST /api/feedback）时引用，24 小时内有效。The id to "
        "rate this answer with in POST /api/feedback, valid for 24 hours.",
        examples=["5f0c3a9e2b7d4c1e8a6f9b0d3e2c1a47"],
    )


class DocumentSummary(DocumentInfo):
    """A document's catalogue metadata (the fields of `corpus.models.DocumentInfo`) with where
    it comes from."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    source_file: str = Field(description="来源文件名。Source file name.")
    sections: int = Field(description="章节数。Number of sections.")


def document_summary(document: Document) -> DocumentSummary:
    return DocumentSummary(
        **document.model_dump(include=set(DocumentInfo.model_fields)),
        source_file=document.source_file,
        sections=len(document.sections),
    )


class UploadForm(DocumentMetadata):
    """The upload form's fields besides the file: the metadata staff give (blank: read from
    the document), and the document it replaces."""

    # The form also carries the file, which FastAPI passes to the model too.
    model_config = ConfigDict(frozen=True, extra="ignore")

    replaces: optional_text(max_length=64) = Field(
        None, description="被替代的文档编号。doc_id this one replaces."
    )
    remove_replaced: bool = Field(
        False, description="删除被替代的文档，而非标记为已替代。Remove the replaced document instead of flagging it."
    )


class SupersedeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(None, max_length=64, description="替代它的文档编号。The doc_id that replaces it.")


class SectionOut(BaseModel):
    path: list[str] = Field(
        description="从顶层到本节的标题。Headings from the top level down to this section.",
        examples=[["一、建设背景"]],
    )
    level: int = Field(description="层级，1 为顶层。Depth, 1 is top level.", examples=[1])


class DocumentOutline(DocumentSummary):
    outline: list[SectionOut] = Field(
        description="章节目录（按文中顺序的扁平列表）。Section outline, flat, in document order."
    )


class FeedbackAnswer(AskResponse):
    """An answer as a client sends it back with feedback: one saved before the reader's
    confidence existed is still accepted."""

    confidence: float = Field(default=0.0, ge=0.0, le=1.0, description="置信度（0 到 1）。Confidence.")
    confidence_label: str = Field(default="低", description="置信度等级。Confidence label.")


class FeedbackRequest(BaseModel):
    """A rating of an answer /api/ask gave, named by its `answer_id`: the server stores its
    own copy of that answer and its question, not what a client sends."""

    model_config = ConfigDict(extra="forbid")

    rating: str = Field(
        pattern="^(up|down)$", description="up（有用）或 down（没用）。", examples=["down"]
    )
    answer_id: str = Field(
        pattern="^[0-9a-f]{32}$",
        description="POST /api/ask 返回的 answer_id。The answer_id /api/ask returned.",
        examples=["5f0c3a9e2b7d4c1e8a6f9b0d3e2c1a47"],
    )
    comment: str | None = Field(default=None, max_length=2000, description="备注。Free text.")
    # Sent by clients written before answer ids; accepted and ignored.
    question: str | None = Field(
        default=None, max_length=5000, deprecated=True,
        description="已弃用，忽略：以服务端记录的问题为准。Ignored: the server's record is stored.",
    )
    history: list[str] = Field(
        default_factory=list, max_length=50, deprecated=True,
        description="已弃用，忽略。Ignored.",
    )
    answer: FeedbackAnswer | None = Field(
        default=None, deprecated=True,
        description="已弃用，忽略：以 answer_id 对应的答案为准。Ignored: the answer issued as "
        "answer_id is stored.",
    )

    @field_validator("question", "comment")
    @classmethod
    def _text_encodable(cls, value: str | None) -> str | None:
        return None if value is None else _reject_surrogates(value)

    @field_validator("history")
    @classmethod
    def _history_encodable(cls, values: list[str]) -> list[str]:
        for value in values:
            _reject_surrogates(value)
        return values


class FeedbackStored(BaseModel):
    id: int = Field(description="反馈记录编号。Row id in the feedback store.")


class ErrorDetail(BaseModel):
    field: str = Field(description="出错的字段。The offending field.", examples=["question"])
    message: str = Field(description="中文说明。What is wrong, in Chinese.")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body. Never repeats the submitted input."""

    error: str = Field(description="机器可读的错误代码。Machine-readable code.", examples=["empty"])
    message: str = Field(description="中文说明。Readable message.", examples=["问题不能为空。"])
    details: list[ErrorDetail] = Field(default_factory=list, description="逐字段的说明。")


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    embedder: str | None = Field(default=None, description="嵌入模型。Embedding model.")
    corpus_fingerprint: str | None = Field(default=None, description="语料指纹。Corpus hash.")
    index_version: str | None = Field(default=None, description="索引版本。Index version.")
    chunks: int | None = Field(default=None, description="段落数。Number of chunks indexed.")
    documents: int | None = Field(default=None, description="文档数。Number of documents.")
    rebuild: dict[str, Any] | None = Field(
        default=None,
        description="索引重建状态。Background rebuild: running, queued, requested, applied, last.",
    )
    reload: dict[str, Any] | None = Field(
        default=None,
        description="另一进程发布的索引未能加载（仍在使用旧索引）。A build another process published"
        " that did not load: its version, the error, when, and the version still served.",
    )
