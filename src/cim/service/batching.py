"""Dynamic batching: concurrent callers' items are gathered into one call of a batch function.

Used twice, with the same semantics: by the reward service (concurrent HTTP requests -> one scorer call) and
by verl's reward function (concurrent per-rollout calls -> one request to the service or one in-process
scorer call).

A *unit* is one caller's list of items. A batch starts with the first waiting unit and closes when it holds
``max_batch`` items, when the next waiting unit does not fit, or when ``window_s`` has passed since it started.
One batch runs at a time, so while the batch function is busy the next batch fills up (under load, batches
grow on their own; when idle, a lone caller waits at most ``window_s``).

- **Fair to small callers**: a unit of at most ``max_batch`` items is never split; a larger one is cut into
  pieces of ``max_batch``, one piece per batch, and after each piece it queues behind the units that arrived
  meanwhile. A big caller therefore holds the batch function for one piece at a time, and a small caller
  waits for at most about one batch, not for the whole big request.
- **One bad caller fails alone**: when a batch of several units raises, its units are scored again apart
  (halves, recursively), so only the unit that makes the function raise gets the exception, wrapped in
  :class:`UnitFailed` when other units of that batch were served (evidence that its items are the cause).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

BatchFn = Callable[[list[Any]], Awaitable[list[Any]]]

__all__ = ["BatchStats", "MicroBatcher", "UnitFailed"]


class UnitFailed(RuntimeError):
    """Scoring one caller's items raised when they were scored apart from the rest of their batch, while the
    other callers of that batch were served: the items are the likely cause. ``cause`` is the exception."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    units: int = 0
    largest: int = 0
    busy_s: float = 0.0
    failed_calls: int = 0                             # calls of the batch function that raised
    sizes: list[int] = field(default_factory=list)   # the last few batch sizes (observable batching)

    def as_dict(self) -> dict:
        return {"batches": self.batches, "items": self.items, "requests": self.units,
                "largest_batch": self.largest, "mean_batch": self.items / self.batches if self.batches else 0.0,
                "busy_s": round(self.busy_s, 3), "failed_calls": self.failed_calls,
                "recent_batches": list(self.sizes[-20:])}


@dataclass
class _Unit:
    items: list
    future: asyncio.Future
    taken: int = 0                                   # items already placed in a batch
    delivered: int = 0                               # items with results
    results: list = field(default_factory=list)


@dataclass
class _Piece:
    unit: _Unit
    start: int
    stop: int

    @property
    def items(self) -> list:
        return self.unit.items[self.start:self.stop]


class MicroBatcher:
    """``await batcher.submit(items) -> results`` (same length and order as ``items``).

    ``fn`` is an async function ``list[item] -> list[result]``. A result list of the wrong length is an error
    (never a silent mismatch). An exception reaches only the callers whose items make ``fn`` raise (see the
    module docstring). The batcher belongs to the event loop it was first used on.
    """

    def __init__(self, fn: BatchFn, max_batch: int, window_s: float):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn, self.max_batch, self.window_s = fn, int(max_batch), float(window_s)
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Unit] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[_Unit] = deque()        # units with items not yet in a batch, in turn order
        self._again: list[_Unit] = []                # units cut into pieces: back in line after new arrivals

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        items = list(items)
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop, self._queue = loop, asyncio.Queue()
        elif self._loop is not loop:
            raise RuntimeError("MicroBatcher used from a second event loop; make one per loop")
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="cim-microbatcher")
        unit = _Unit(items, loop.create_future(), results=[None] * len(items))
        self._queue.put_nowait(unit)
        return await unit.future

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._worker = None
        if self._queue is not None:
            self._drain()
        self._cancel([*self._waiting, *self._again])
        self._waiting, self._again = deque(), []

    @staticmethod
    def _cancel(units) -> None:
        for unit in units:
            if not unit.future.done():
                unit.future.cancel()

    # -- scheduling -----------------------------------------------------------------------------------
    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            try:
                self._waiting.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    def _take(self, batch: list[_Piece], n: int) -> tuple[int, bool]:
        """Move pieces of waiting units into ``batch`` in turn order, one piece per unit; a unit whose piece
        does not fit keeps its turn for the next batch. Returns (items in the batch, whether one did not fit)."""
        skipped: deque[_Unit] = deque()
        while self._waiting:
            unit = self._waiting.popleft()
            if unit.future.done():                   # the caller gave up
                continue
            size = min(len(unit.items) - unit.taken, self.max_batch)
            if n + size > self.max_batch:
                skipped.append(unit)
                continue
            batch.append(_Piece(unit, unit.taken, unit.taken + size))
            unit.taken += size
            n += size
            if unit.taken < len(unit.items):
                self._again.append(unit)
        self._waiting = skipped
        return n, bool(skipped)

    async def _next_batch(self) -> list[_Piece]:
        assert self._queue is not None
        self._drain()                                # who arrived while the last batch ran goes first ...
        self._waiting.extend(self._again)            # ... then the rest of a big unit
        self._again = []
        while not any(not u.future.done() for u in self._waiting):
            self._waiting = deque([await self._queue.get()])
            self._drain()
        deadline = time.monotonic() + self.window_s
        batch: list[_Piece] = []
        n = 0
        while True:
            n, full = self._take(batch, n)
            if full or n >= self.max_batch:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                unit = await asyncio.wait_for(self._queue.get(), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                break
            self._waiting.append(unit)
            self._drain()                            # a backlog joins without waiting
        return batch

    # -- scoring --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch = [p for p in await self._next_batch() if not p.unit.future.done()]
            if not batch:
                continue
            try:
                failures = await self._score(batch)
            except asyncio.CancelledError:
                self._cancel(p.unit for p in batch)
                raise
            isolated = len(failures) < len(batch)    # others of this batch were served
            for piece, exc in failures:
                if not piece.unit.future.done():
                    piece.unit.future.set_exception(UnitFailed(exc) if isolated else exc)

    async def _score(self, pieces: list[_Piece]) -> list[tuple[_Piece, Exception]]:
        """One call of ``fn`` over ``pieces``; if it raises, each half is scored apart, down to single
        pieces. Returns the pieces that failed alone, with their exceptions."""
        flat = [item for p in pieces for item in p.items]
        t0 = time.perf_counter()
        try:
            results = await self.fn(flat)
            if len(results) != len(flat):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(flat)} items")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - narrowed to the guilty caller below
            self.stats.failed_calls += 1
            if len(pieces) == 1:
                return [(pieces[0], exc)]
            mid = len(pieces) // 2
            return await self._score(pieces[:mid]) + await self._score(pieces[mid:])
        finally:
            self.stats.busy_s += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.items += len(flat)
        self.stats.largest = max(self.stats.largest, len(flat))
        self.stats.sizes.append(len(flat))
        del self.stats.sizes[:-100]
        pos = 0
        for p in pieces:
            unit, size = p.unit, p.stop - p.start
            unit.results[p.start:p.stop] = results[pos:pos + size]
            pos += size
            unit.delivered += size
            if unit.delivered == len(unit.items) and not unit.future.done():
                self.stats.units += 1
                unit.future.set_result(unit.results)
        return []
