"""Passage vectors in Milvus: the `index.backends.DenseStore` for corpora that outgrow one
machine, and for replicas that share one vector database.

`POLICYQA_VECTOR_STORE=milvus` selects it; `POLICYQA_MILVUS_URI` names the server
(`http://milvus.internal:19530`, `https://...` for TLS) or a Milvus Lite file (`*.db`,
embedded, no server: the default, `data_dir/milvus.db`); `POLICYQA_MILVUS_TOKEN` is
`user:password` or an API key, and `POLICYQA_MILVUS_DB_NAME` the database. The same code
talks to Milvus Lite, standalone and cluster, through `pymilvus.MilvusClient`.

Each build writes a new collection, `<milvus_collection>_<UTC time to the µs>_<random>`, holding row i
(the primary key `row`) = chunk i of that build's chunk store, and the index directory gets
`milvus.json` naming it. So a build never changes what a serving replica reads: the replica
keeps its collection until it loads the next index directory. A build drops the build
collections of the same prefix beyond the newest `KEEP_BUILDS`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from corpus.settings import Settings

POINTER_FILE = "milvus.json"
# The published build, the one it replaced (replicas that have not reloaded yet) and a
# build in progress or just failed.
KEEP_BUILDS = 3
_INSERT_BATCH = 2_000
_ROW, _VECTOR = "row", "vector"
_BUILD_SUFFIX = re.compile(r"_\d{20}_[0-9a-f]{8}$")
# Milvus index type for each `index.dense.dense_index_kind`, and its search parameters.
_INDEX_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}
HNSW_BUILD = {"M": 32, "efConstruction": 64}
HNSW_SEARCH = {"ef": 128}
IVF_SEARCH = {"nprobe": 16}

_clients_lock = threading.Lock()
_clients: dict[tuple[str, str, str], "MilvusClient"] = {}


class MilvusStoreError(RuntimeError):
    """Milvus cannot be reached, or does not hold what the index names. The message says
    what, in Chinese then English, and how to fix it."""


def resolve_uri(settings: "Settings") -> str:
    """`settings.index.milvus_uri`, or the Milvus Lite file `data_dir/milvus.db` when unset."""
    if settings.index.milvus_uri:
        return settings.index.milvus_uri
    return str(Path(settings.index.data_dir) / "milvus.db")


def display_uri(uri: str) -> str:
    """The URI without credentials, for messages and the pointer file."""
    return re.sub(r"//[^/@]*@", "//", uri)


def connect(settings: "Settings") -> "MilvusClient":
    """One client per (uri, database, token) per process: a Milvus Lite file may be opened
    by one process only, and gRPC channels are meant to be shared (they are thread-safe).

    :raises MilvusStoreError: when the server cannot be reached.
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    uri = resolve_uri(settings)
    token = settings.index.milvus_token.get_secret_value() if settings.index.milvus_token else ""
    key = (uri, settings.index.milvus_db_name, token)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        if uri.endswith(".db"):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = MilvusClient(uri=uri, token=token, db_name=settings.index.milvus_db_name,
                                  timeout=30)
        except MilvusException as error:
            raise MilvusStoreError(
                f"无法连接向量库 Milvus（{display_uri(uri)}）/ cannot connect to Milvus at "
                f"{display_uri(uri)}: {error}. 请检查 POLICYQA_MILVUS_URI 与 POLICYQA_MILVUS_TOKEN"
            ) from None
        _clients[key] = client
        return client


def build_collections(client: "MilvusClient", prefix: str) -> list[str]:
    """The build collections of `prefix`, oldest first (their names sort by build time)."""
    return sorted(
        name for name in client.list_collections()
        if name.startswith(prefix + "_") and _BUILD_SUFFIX.fullmatch(name[len(prefix):])
    )


def _search_params(index_type: str) -> dict:
    params = {"HNSW": HNSW_SEARCH, "IVF_FLAT": IVF_SEARCH}.get(index_type, {})
    return {"metric_type": "IP", "params": dict(params)}


class MilvusDenseStore:
    """A build's passage vectors in one Milvus collection. `top_k` is safe from concurrent
    threads (one shared gRPC client)."""

    def __init__(
        self, client: "MilvusClient", collection: str, dim: int, size: int, index_type: str,
        uri: str,
    ) -> None:
        self.client = client
        self.collection = collection
        self._dim = dim
        self._size = size
        self.index_type = index_type
        self.uri = uri

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def size(self) -> int:
        return self._size

    @property
    def kind(self) -> str:
        return "milvus"

    @classmethod
    def build(cls, vectors: np.ndarray, settings: "Settings | None" = None) -> "MilvusDenseStore":
        """Writes `vectors` (row i = vectors[i]) into a new collection and loads it.

        :raises ValueError: when `vectors` is not a 2-D array.
        :raises MilvusStoreError: when Milvus cannot be reached or refuses the collection.
        """
        from pymilvus import DataType, MilvusClient
        from pymilvus.exceptions import MilvusException

        from index.dense import dense_index_kind, ivf_lists

        settings = _settings(settings)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"expected a (n, dim) array, got shape {vectors.shape}")
        size, dim = vectors.shape
        client = connect(settings)
        uri = resolve_uri(settings)
        # to the microsecond, so that names sort by build time (the suffix only avoids clashes)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S%f")
        collection = f"{settings.index.milvus_collection}_{stamp}_{uuid.uuid4().hex[:8]}"
        index_type = _INDEX_TYPES[dense_index_kind(size)]
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(_ROW, DataType.INT64, is_primary=True)
        schema.add_field(_VECTOR, DataType.FLOAT_VECTOR, dim=dim)
        index_params = client.prepare_index_params()
        build_params = {"HNSW": HNSW_BUILD, "IVF_FLAT": {"nlist": ivf_lists(size)}}.get(index_type, {})
        index_params.add_index(_VECTOR, index_type=index_type, metric_type="IP",
                               params=dict(build_params))
        try:
            client.create_collection(collection, schema=schema, index_params=index_params)
            try:
                for start in range(0, size, _INSERT_BATCH):
                    block = vectors[start : start + _INSERT_BATCH]
                    client.insert(collection, [{_ROW: start + offset, _VECTOR: vector}
                                               for offset, vector in enumerate(block)])
                client.flush(collection)
                client.load_collection(collection)
                stored = _row_count(client, collection)
                if stored != size:
                    raise MilvusStoreError(
                        f"向量写入不完整 / Milvus holds {stored} of {size} vectors in {collection}"
                    )
            except BaseException:
                client.drop_collection(collection)
                raise
            _drop_old_builds(client, settings.index.milvus_collection, keep=KEEP_BUILDS)
        except MilvusException as error:
            raise MilvusStoreError(
                f"向量库写入失败 / Milvus refused the build collection {collection} at "
                f"{display_uri(uri)}: {error}"
            ) from None
        return cls(client, collection, dim, size, index_type, uri)

    def save(self, directory: Path) -> list[str]:
        """Writes the pointer to this build's collection (never the token)."""
        pointer = {"collection": self.collection, "dim": self.dim, "size": self.size,
                   "index_type": self.index_type, "metric": "IP",
                   "built_at_uri": display_uri(self.uri)}
        (directory / POINTER_FILE).write_text(json.dumps(pointer, indent=1), encoding="utf-8")
        return [POINTER_FILE]

    @classmethod
    def load(cls, directory: Path, settings: "Settings | None" = None) -> "MilvusDenseStore":
        """The collection `save` named, on the Milvus of `settings` (its URI may differ from
        the builder's: replicas may reach the same server under another name).

        :raises MilvusStoreError: unreachable Milvus, missing collection, wrong row count.
        :raises OSError, ValueError, KeyError: a missing or corrupt pointer file.
        """
        from pymilvus.exceptions import MilvusException

        settings = _settings(settings)
        pointer = json.loads((Path(directory) / POINTER_FILE).read_text(encoding="utf-8"))
        collection, size = str(pointer["collection"]), int(pointer["size"])
        client = connect(settings)
        uri = resolve_uri(settings)
        try:
            if not client.has_collection(collection):
                raise MilvusStoreError(
                    f"向量库中没有该索引的集合 {collection}（{display_uri(uri)}）/ Milvus at "
                    f"{display_uri(uri)} has no collection {collection} (dropped, or another "
                    f"Milvus); rebuild the index"
                )
            client.load_collection(collection)
            stored = _row_count(client, collection)
        except MilvusException as error:
            raise MilvusStoreError(
                f"向量库读取失败 / Milvus at {display_uri(uri)}: {error}"
            ) from None
        if stored != size:
            raise MilvusStoreError(
                f"向量库中的向量数与索引不符 / {collection} holds {stored} vectors, the index {size}"
            )
        return cls(client, collection, int(pointer["dim"]), size, str(pointer["index_type"]), uri)

    def top_k(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Up to k (row, inner product) pairs, best first, ties by row. `allowed` becomes
        a filter expression on the primary key, which Milvus applies before the search,
        so a filtered search still returns k hits when that many exist."""
        if k <= 0 or self.size == 0:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dim:
            raise ValueError(f"query has dimension {query.shape[0]}, index has {self.dim}")
        expression = ""
        if allowed is not None:
            if allowed.size == 0:
                return []
            expression = _row_filter(np.asarray(allowed, dtype=np.int64), self.size)
        limit = min(k, self.size if allowed is None else int(allowed.size))
        results = self.client.search(
            self.collection, data=[query.tolist()], anns_field=_VECTOR, limit=limit,
            filter=expression, search_params=_search_params(self.index_type),
        )
        pairs = [(int(hit[_ROW] if _ROW in hit else hit["id"]), float(hit["distance"]))
                 for hit in results[0]]
        pairs.sort(key=lambda pair: (-pair[1], pair[0]))
        return pairs

    def drop(self) -> None:
        """Deletes this build's collection (tests, and a build that is discarded)."""
        self.client.drop_collection(self.collection)


def _settings(settings: "Settings | None") -> "Settings":
    if settings is not None:
        return settings
    from corpus.settings import settings as global_settings

    return global_settings


def _row_count(client: "MilvusClient", collection: str) -> int:
    rows = client.query(collection, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"])


def _row_filter(allowed: np.ndarray, size: int) -> str:
    """`row in [...]`, or `row not in [...]` when that names fewer rows (a filter that
    keeps most documents, such as "only documents in force")."""
    if 2 * allowed.size <= size:
        return f"{_ROW} in [{','.join(map(str, allowed.tolist()))}]"
    excluded = np.setdiff1d(np.arange(size, dtype=np.int64), allowed, assume_unique=True)
    if excluded.size == 0:
        return ""
    return f"{_ROW} not in [{','.join(map(str, excluded.tolist()))}]"


def _drop_old_builds(client: "MilvusClient", prefix: str, keep: int) -> list[str]:
    names = build_collections(client, prefix)
    dropped = names[:-keep] if keep > 0 else names
    for name in dropped:
        client.drop_collection(name)
    return dropped
