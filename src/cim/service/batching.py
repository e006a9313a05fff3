"""Dynamic batching: concurrent callers' items are gathered into one call of a batch function.

Used twice, with the same semantics: by the reward service (concurrent HTTP requests -> one scorer call) and
by verl's reward function (concurrent per-rollout calls -> one request to the service or one in-process
scorer call).

A *unit* is one caller's list of items; units are never split. A batch starts with the first waiting unit
and closes when it holds ``max_batch`` items or ``window_s`` has passed since it started, whichever is first.
One batch runs at a time, so while the batch function is busy the next batch fills up (under load, batches
grow on their own; when idle, a lone caller waits at most ``window_s``).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

BatchFn = Callable[[list[Any]], Awaitable[list[Any]]]


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    units: int = 0
    largest: int = 0
    busy_s: float = 0.0
    sizes: list[int] = field(default_factory=list)   # the last few batch sizes (observable batching)

    def as_dict(self) -> dict:
        return {"batches": self.batches, "items": self.items, "requests": self.units,
                "largest_batch": self.largest, "mean_batch": self.items / self.batches if self.batches else 0.0,
                "busy_s": round(self.busy_s, 3), "recent_batches": list(self.sizes[-20:])}


@dataclass
class _Unit:
    items: list
    future: asyncio.Future


class MicroBatcher:
    """``await batcher.submit(items) -> results`` (same length and order as ``items``).

    ``fn`` is an async function ``list[item] -> list[result]``. An exception from ``fn`` is raised in every
    caller of that batch; a result list of the wrong length is an error too (never a silent mismatch).
    The batcher belongs to the event loop it was first used on.
    """

    def __init__(self, fn: BatchFn, max_batch: int = 1024, window_s: float = 0.005):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn, self.max_batch, self.window_s = fn, int(max_batch), float(window_s)
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Unit] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._carry: _Unit | None = None

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
        unit = _Unit(items, loop.create_future())
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

    # -- worker ---------------------------------------------------------------------------------------
    async def _next_batch(self) -> list[_Unit]:
        assert self._queue is not None
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, n = [first], len(first.items)
        deadline = time.monotonic() + self.window_s
        while n < self.max_batch:
            try:
                unit = self._queue.get_nowait()          # a backlog joins without waiting
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    unit = await asyncio.wait_for(self._queue.get(), remaining)
                except (asyncio.TimeoutError, TimeoutError):
                    break
            if n + len(unit.items) > self.max_batch:
                self._carry = unit                       # starts the next batch
                break
            batch.append(unit)
            n += len(unit.items)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            batch = [u for u in batch if not u.future.done()]      # callers that gave up
            if not batch:
                continue
            flat = [item for u in batch for item in u.items]
            t0 = time.perf_counter()
            try:
                results = await self.fn(flat)
                if len(results) != len(flat):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(flat)} items")
            except asyncio.CancelledError:
                for u in batch:
                    if not u.future.done():
                        u.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                for u in batch:
                    if not u.future.done():
                        u.future.set_exception(exc)
                continue
            finally:
                self.stats.busy_s += time.perf_counter() - t0
            self.stats.batches += 1
            self.stats.items += len(flat)
            self.stats.units += len(batch)
            self.stats.largest = max(self.stats.largest, len(flat))
            self.stats.sizes.append(len(flat))
            del self.stats.sizes[:-100]
            pos = 0
            for u in batch:
                part = results[pos:pos + len(u.items)]
                pos += len(u.items)
                if not u.future.done():
                    u.future.set_result(part)
