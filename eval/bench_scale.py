"""Scale benchmark: the seed eval among real distractors, and dense search alone at 100k-1M.

Run with `python -m eval.bench_scale [--part corpus|dense|all]` (default all).

- `--part corpus` (a): the seed eval with every paragraph of CMRC 2018 dev and DRCD dev and
  test added as distractor documents; implemented in `eval.bench_scale_corpus` (its
  `run(args) -> dict`), report `eval/reports/bench_scale_corpus.json`.
- `--part dense` (b): synthetic 384-d L2-normalised vectors (seeded), clustered like passage
  embeddings: `--clusters` topics, each point its topic's centre plus a point of a 32-d
  subspace of its own plus isotropic noise (10,000 topics: ~10 points each at 100k, ~100 at
  1M, so neighbours cross topic borders and neither IVF cells nor HNSW links find them
  trivially). Queries are drawn from the same mixture (near the data, never in it).
  For each size, FAISS flat (exact), FAISS HNSW, FAISS IVF-flat and Milvus Lite (its HNSW,
  and IVF_FLAT with `--engines`) are measured on build time, single-query latency (p50, p95,
  one query per call, as `policyqa serve` asks) and recall@10 against exact search. Report
  `eval/reports/bench_scale_dense.json`; the README's cut-over between index types comes
  from it (`index.dense.dense_index_kind`).

At 1M vectors the dense part needs about 6 GB of memory and, on 2 busy cores, more than an
hour; Milvus Lite is measured up to `--milvus-max` (100k: its search is O(N) Python per
query, see the README). Run it in the background:

    nohup .venv/bin/python -m eval.bench_scale --part dense > /tmp/bench_scale.log 2>&1 &
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from corpus.settings import PROJECT_ROOT
from index.dense import IVF_TRAIN_POINTS_PER_LIST, ivf_lists

# OpenMP threads spin while they wait: on a busy 2-core machine a single query on 2 threads is
# several times slower than on 1. Threads Milvus Lite starts (its gRPC workers) take this
# default, read when faiss is first imported; this process raises it for FAISS builds only.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPORT_DIR = PROJECT_ROOT / "eval" / "reports"
DENSE_REPORT = REPORT_DIR / "bench_scale_dense.json"
DIM = 384
LATENT_DIM = 32
# Cosine geometry close to e5 passages: a point is ~0.8 cosine from its topic's centre.
SIGNAL_NORM = 0.6
NOISE_NORM = 0.2
RECALL_K = 10
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40  # FAISS's default; Milvus Lite is given the same
HNSW_EF_SEARCH = (64, 128)
IVF_NPROBE = (16, 32)
ENGINES = ("faiss-flat", "faiss-hnsw", "faiss-ivf", "milvus-hnsw")
ALL_ENGINES = (*ENGINES, "milvus-ivf", "milvus-flat")
_MILVUS_INSERT_BATCH = 5_000


class MixtureSampler:
    """Seeded Gaussian-mixture vectors: the same `seed` gives the same topics and points."""

    def __init__(self, dim: int = DIM, clusters: int = 10_000, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.clusters = dim, clusters
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        # Each topic's own subspace, scaled so that its offsets have norm ~SIGNAL_NORM.
        self.bases = rng.standard_normal((clusters, dim, LATENT_DIM)).astype(np.float32) * (
            SIGNAL_NORM / math.sqrt(dim * LATENT_DIM)
        )
        self.seed = seed

    def sample(self, n: int, stream: int) -> np.ndarray:
        """n unit vectors, shuffled across topics; `stream` separates data from queries."""
        rng = np.random.default_rng([self.seed, stream])
        labels = rng.integers(self.clusters, size=n)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=self.clusters)
        out = np.empty((n, self.dim), dtype=np.float32)
        start = 0
        noise_scale = NOISE_NORM / math.sqrt(self.dim)
        for cluster, count in enumerate(counts):
            if not count:
                continue
            rows = order[start : start + count]
            latent = rng.standard_normal((count, LATENT_DIM)).astype(np.float32)
            block = self.centres[cluster] + latent @ self.bases[cluster].T
            block += rng.standard_normal(block.shape).astype(np.float32) * noise_scale
            out[rows] = block
            start += count
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = RECALL_K) -> float:
    """Mean over queries of |found[:k] & truth[:k]| / k (ids < 0 are misses)."""
    hits = 0
    for row_found, row_truth in zip(found[:, :k], truth[:, :k]):
        hits += len(set(int(i) for i in row_found if i >= 0) & set(int(i) for i in row_truth))
    return hits / (k * len(truth))


def latency_ms(
    search_one: Callable[[np.ndarray], object], queries: np.ndarray, threads: int = 1
) -> dict:
    """Single-query latency over `queries` with FAISS on `threads` threads, after one
    untimed warm-up call. One thread is what a query gets in `policyqa serve`, where
    concurrent requests share the cores (and OpenMP spinning on a busy machine is slower)."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        return _timed(search_one, queries)
    finally:
        faiss.omp_set_num_threads(previous)


def _timed(search_one: Callable[[np.ndarray], object], queries: np.ndarray) -> dict:
    search_one(queries[0])
    timings = []
    for query in queries:
        started = time.perf_counter()
        search_one(query)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 3),
        "p95_ms": round(timings[min(len(timings) - 1, int(0.95 * len(timings)))], 3),
        "calls": len(timings),
    }


def _file_mib(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 2**20, 1)
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def _peak_rss_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def bench_faiss(
    engine: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray,
    args: argparse.Namespace, work: Path,
) -> dict:
    import faiss

    n, dim = data.shape
    started = time.perf_counter()
    if engine == "faiss-flat":
        index = faiss.IndexFlatIP(dim)
        index.add(data)
        settings_list = [({}, lambda: None)]
        params: dict = {}
    elif engine == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(data)
        params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}

        def ef(value: int) -> Callable[[], None]:
            return lambda: setattr(index.hnsw, "efSearch", value)

        settings_list = [({"efSearch": value}, ef(value)) for value in HNSW_EF_SEARCH]
    elif engine == "faiss-ivf":
        nlist = ivf_lists(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        train_points = min(n, nlist * IVF_TRAIN_POINTS_PER_LIST)
        sample = np.random.default_rng(1).choice(n, size=train_points, replace=False)
        index.train(data[np.sort(sample)])
        index.add(data)
        params = {"nlist": nlist, "train_points": train_points}

        def probe(value: int) -> Callable[[], None]:
            return lambda: setattr(index, "nprobe", value)

        settings_list = [({"nprobe": value}, probe(value)) for value in IVF_NPROBE]
    else:
        raise ValueError(engine)
    build_s = time.perf_counter() - started
    path = work / f"{engine}.faiss"
    faiss.write_index(index, str(path))
    result = {"engine": engine, "build_s": round(build_s, 2), "params": params,
              "index_mib": _file_mib(path), "search": []}
    path.unlink()
    for search_params, apply in settings_list:
        apply()
        _, found = index.search(queries, RECALL_K)
        timing = latency_ms(lambda q: index.search(q.reshape(1, -1), RECALL_K),
                            queries[: args.latency_queries], args.search_threads)
        result["search"].append({**search_params, **timing,
                                 "recall_at_10": round(recall_at_k(found, truth), 4)})
    del index
    return result


def bench_milvus(
    engine: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray,
    args: argparse.Namespace, work: Path,
) -> dict:
    """Milvus Lite through pymilvus, exactly as index.milvus talks to a Milvus server."""
    from pymilvus import DataType, MilvusClient

    n, dim = data.shape
    db_path = work / f"{engine}.db"
    client = MilvusClient(str(db_path))
    collection = "bench"
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index_params = client.prepare_index_params()
    if engine == "milvus-hnsw":
        build = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
        index_params.add_index("vector", index_type="HNSW", metric_type="IP", params=build)
        search_list = [{"ef": value} for value in HNSW_EF_SEARCH]
    elif engine == "milvus-ivf":
        # Milvus Lite builds one IVF per segment (<= 100k rows), so cells are sized per segment.
        build = {"nlist": ivf_lists(min(n, 100_000))}
        index_params.add_index("vector", index_type="IVF_FLAT", metric_type="IP", params=build)
        search_list = [{"nprobe": value} for value in IVF_NPROBE]
    elif engine == "milvus-flat":
        build = {}
        index_params.add_index("vector", index_type="FLAT", metric_type="IP")
        search_list = [{}]
    else:
        raise ValueError(engine)
    started = time.perf_counter()
    client.create_collection(collection, schema=schema, index_params=index_params)
    for start in range(0, n, _MILVUS_INSERT_BATCH):
        block = data[start : start + _MILVUS_INSERT_BATCH]
        client.insert(collection, [{"row": start + i, "vector": vector}
                                   for i, vector in enumerate(block)])
    client.flush(collection)
    client.load_collection(collection)
    # Searching once makes Milvus Lite finish any index still pending on a segment.
    client.search(collection, data=[queries[0]], anns_field="vector", limit=RECALL_K)
    build_s = time.perf_counter() - started
    result = {"engine": engine, "build_s": round(build_s, 2),
              "params": {"index_type": engine.split("-")[1].upper(), **build},
              "index_mib": _file_mib(db_path), "search": []}
    for search_params in search_list:
        found = np.full((len(queries), RECALL_K), -1, dtype=np.int64)
        for start in range(0, len(queries), 100):
            answers = client.search(collection, data=list(queries[start : start + 100]),
                                    anns_field="vector", limit=RECALL_K,
                                    search_params={"metric_type": "IP", "params": search_params})
            for offset, hits in enumerate(answers):
                ids = [hit["row"] if "row" in hit else hit["id"] for hit in hits]
                found[start + offset, : len(ids)] = ids

        def one(query: np.ndarray, params: dict = search_params) -> object:
            return client.search(collection, data=[query], anns_field="vector", limit=RECALL_K,
                                 search_params={"metric_type": "IP", "params": params})

        timing = latency_ms(one, queries[: args.latency_queries], args.search_threads)
        result["search"].append({**search_params, **timing,
                                 "recall_at_10": round(recall_at_k(found, truth), 4)})
    client.drop_collection(collection)
    client.close()
    shutil.rmtree(db_path, ignore_errors=True)
    return result


def run_dense(args: argparse.Namespace, checkpoint: Callable[[dict], None] = lambda _: None) -> dict:
    """Part (b). `checkpoint` receives the figures so far after each engine, so that a run
    cut short (1M vectors take long) still leaves what it measured."""
    import faiss

    faiss.omp_set_num_threads(args.build_threads)
    sampler = MixtureSampler(dim=args.dim, clusters=args.clusters, seed=args.seed)
    sizes: list[dict] = []
    figures_so_far = {
        "dim": args.dim, "clusters": args.clusters, "latent_dim": LATENT_DIM, "seed": args.seed,
        "queries": args.queries, "latency_queries": args.latency_queries, "k": RECALL_K,
        "build_threads": args.build_threads, "search_threads": args.search_threads,
        "milvus_lite_threads": os.environ.get("OMP_NUM_THREADS"),
        "sizes": sizes,
    }
    for n in args.sizes:
        print(f"dense: {n} vectors...", flush=True)
        started = time.perf_counter()
        data = sampler.sample(n, stream=0)
        queries = sampler.sample(args.queries, stream=1)
        generate_s = time.perf_counter() - started
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(data)
        _, truth = exact.search(queries, RECALL_K)
        del exact
        engines: list[dict] = []
        sizes.append({"vectors": n, "vectors_mib": round(data.nbytes / 2**20, 1),
                      "generate_s": round(generate_s, 1), "engines": engines})
        with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work_dir) as work:
            for engine in args.engines:
                if engine.startswith("milvus") and n > args.milvus_max:
                    engines.append({"engine": engine, "skipped": f"n > --milvus-max {args.milvus_max}"})
                    continue
                print(f"  {engine}...", flush=True)
                bench = bench_milvus if engine.startswith("milvus") else bench_faiss
                figures = bench(engine, data, queries, truth, args, Path(work))
                figures["peak_rss_mib"] = _peak_rss_mib()
                engines.append(figures)
                _print_engine(n, figures)
                checkpoint(figures_so_far)
        del data
    return figures_so_far


def _print_engine(n: int, figures: dict) -> None:
    for search in figures["search"]:
        knobs = ", ".join(f"{k}={v}" for k, v in search.items()
                          if k not in ("p50_ms", "p95_ms", "calls", "recall_at_10"))
        print(f"  {n:>9} {figures['engine']:<12} build {figures['build_s']:>8.1f} s  "
              f"p50 {search['p50_ms']:>8.2f} ms  p95 {search['p95_ms']:>8.2f} ms  "
              f"recall@10 {search['recall_at_10']:.3f}  {knobs}", flush=True)


def run_corpus(args: argparse.Namespace) -> dict | None:
    """Part (a), from `eval.bench_scale_corpus.run(args)`; None when that module is absent."""
    try:
        module = importlib.import_module("eval.bench_scale_corpus")
    except ModuleNotFoundError as error:
        if error.name != "eval.bench_scale_corpus":
            raise
        print("corpus: part (a) is not available: eval/bench_scale_corpus.py does not exist "
              "(it provides run(args) -> dict)", file=sys.stderr, flush=True)
        return None
    return module.run(args)


def git_commit() -> str | None:
    completed = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def _versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("faiss-cpu", "numpy", "pymilvus", "milvus-lite"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_scale",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("corpus", "dense", "all"), default="all")
    parser.add_argument("--split", default="test", help="corpus part: seed eval split (dev, test, all)")
    parser.add_argument("--items", type=int, default=None, help="corpus part: first N eval items only")
    parser.add_argument("--sizes", default="100000,1000000",
                        help="dense part: comma-separated vector counts")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"dense part: any of {','.join(ALL_ENGINES)}")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--clusters", type=int, default=10_000, help="topics in the mixture")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@10")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="queries timed one by one")
    parser.add_argument("--milvus-max", type=int, default=100_000,
                        help="skip Milvus Lite above this many vectors")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1,
                        help="FAISS (and Milvus Lite) threads while building")
    parser.add_argument("--search-threads", type=int, default=1,
                        help="FAISS threads while timing single queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the temporary Milvus Lite files go (default: the system's)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"dense report (default {DENSE_REPORT.relative_to(PROJECT_ROOT)})")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    args.engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    unknown = sorted(set(args.engines) - set(ALL_ENGINES))
    if unknown:
        parser.error(f"unknown engines {unknown}; known: {', '.join(ALL_ENGINES)}")
    if args.latency_queries > args.queries:
        parser.error("--latency-queries must not exceed --queries")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = 0
    if args.part in ("corpus", "all"):
        args.out = REPORT_DIR  # eval.bench_scale_corpus writes its report there
        if run_corpus(args) is None:
            status = 1
        else:
            print(f"written {REPORT_DIR / 'bench_scale_corpus.json'}")
    if args.part in ("dense", "all"):
        result = {
            "benchmark": "scale-dense",
            "command": "python -m eval.bench_scale " + " ".join(argv if argv is not None
                                                                 else sys.argv[1:]),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                            * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
            "versions": _versions(),
            "load_average": {"before": [round(x, 2) for x in os.getloadavg()]},
        }
        output = args.output or DENSE_REPORT
        started = time.perf_counter()

        def write(dense: dict, complete: bool = False) -> None:
            result.update(dense=dense, complete=complete,
                          total_s=round(time.perf_counter() - started, 1))
            result["load_average"]["after"] = [round(x, 2) for x in os.getloadavg()]
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n",
                              encoding="utf-8")

        write(run_dense(args, checkpoint=write), complete=True)
        print(f"written {output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
