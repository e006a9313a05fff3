"""MicroBatcher: concurrent callers gathered into one call, results routed back in order, errors isolated."""
import asyncio

import pytest

from cim.service.batching import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_concurrent_units_become_one_call_and_results_route_back():
    calls = []

    async def fn(items):
        calls.append(list(items))
        await asyncio.sleep(0)
        return [x * 10 for x in items]

    async def main():
        b = MicroBatcher(fn, max_batch=1000, window_s=0.05)
        outs = await asyncio.gather(*(b.submit([i, i + 100]) for i in range(20)))
        return b, outs

    b, outs = run(main())
    assert len(calls) == 1 and len(calls[0]) == 40
    assert outs == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert b.stats.batches == 1 and b.stats.units == 20 and b.stats.largest == 40


def test_max_batch_splits_between_units_never_inside_one():
    sizes = []

    async def fn(items):
        sizes.append(len(items))
        return list(items)

    async def main():
        b = MicroBatcher(fn, max_batch=10, window_s=0.05)
        outs = await asyncio.gather(*(b.submit([(i, j) for j in range(4)]) for i in range(7)))
        return outs

    outs = run(main())
    assert all(s <= 10 for s in sizes) and sum(sizes) == 28
    assert outs == [[(i, j) for j in range(4)] for i in range(7)]
    # a unit larger than max_batch is still served whole
    big = run(MicroBatcher(fn, max_batch=3, window_s=0).submit(list(range(8))))
    assert big == list(range(8))


def test_window_bounds_latency_of_a_lone_caller():
    async def fn(items):
        return items

    async def main():
        b = MicroBatcher(fn, max_batch=100, window_s=0.02)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await b.submit([1])
        return loop.time() - t0

    assert run(main()) < 1.0


def test_batch_error_reaches_every_caller_of_that_batch_only():
    async def fn(items):
        if "boom" in items:
            raise RuntimeError("scorer failed")
        return items

    async def main():
        b = MicroBatcher(fn, max_batch=100, window_s=0.05)
        bad = await asyncio.gather(b.submit(["a"]), b.submit(["boom"]), return_exceptions=True)
        good = await b.submit(["c"])          # the worker survives a failed batch
        return bad, good

    bad, good = run(main())
    assert all(isinstance(x, RuntimeError) for x in bad)
    assert good == ["c"]


def test_wrong_result_count_is_an_error_not_a_mismatch():
    async def fn(items):
        return items[:-1]

    async def main():
        return await MicroBatcher(fn, window_s=0).submit([1, 2, 3])

    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        run(main())
