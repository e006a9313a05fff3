"""MicroBatcher: concurrent callers gathered into one call, results routed back in order, errors isolated to
the guilty caller, large callers cut into pieces interleaved with small ones."""
import asyncio

import pytest

from cim.service.batching import MicroBatcher, UnitFailed


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
    """A unit of at most max_batch items is never split; a larger one is cut (below)."""
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


def test_batch_error_reaches_only_the_guilty_caller():
    async def fn(items):
        if "boom" in items:
            raise RuntimeError("scorer failed")
        return items

    async def main():
        b = MicroBatcher(fn, max_batch=100, window_s=0.05)
        mixed = await asyncio.gather(b.submit(["a"]), b.submit(["boom"]), return_exceptions=True)
        alone = await asyncio.gather(b.submit(["boom"]), return_exceptions=True)
        good = await b.submit(["c"])          # the worker survives a failed batch
        return mixed, alone, good

    mixed, alone, good = run(main())
    assert mixed[0] == ["a"]                  # scored again apart from the guilty caller
    assert isinstance(mixed[1], UnitFailed) and isinstance(mixed[1].cause, RuntimeError)
    assert isinstance(alone[0], RuntimeError) and not isinstance(alone[0], UnitFailed)   # no evidence: as raised
    assert good == ["c"]


def test_one_poisoned_unit_among_many_costs_a_few_calls_and_fails_alone():
    calls = []

    async def fn(items):
        calls.append(len(items))
        if "boom" in items:
            raise TypeError("cannot tokenize")
        return [x.upper() for x in items]

    async def main():
        b = MicroBatcher(fn, max_batch=100, window_s=0.05)
        units = [[f"u{i}a", f"u{i}b"] for i in range(16)]
        units[11] = ["u11a", "boom"]
        return b, await asyncio.gather(*(b.submit(u) for u in units), return_exceptions=True)

    b, outs = run(main())
    for i, out in enumerate(outs):
        if i == 11:
            assert isinstance(out, UnitFailed) and isinstance(out.cause, TypeError)
        else:
            assert out == [f"U{i}A", f"U{i}B"]
    assert calls[0] == 32 and len(calls) <= 1 + 2 * 4          # bisection: 1 + 2 log2(16) calls at most
    assert b.stats.failed_calls == 1 + 4 and b.stats.units == 15


def test_a_large_unit_is_cut_into_pieces_interleaved_with_small_ones():
    order, sizes = [], []

    async def fn(items):
        sizes.append(len(items))
        await asyncio.sleep(0.01)              # the scorer's time: others arrive meanwhile
        order.extend(items)
        return [x * 2 for x in items]

    async def main():
        b = MicroBatcher(fn, max_batch=8, window_s=0.0)
        big = asyncio.ensure_future(b.submit(list(range(64))))          # 8 pieces
        while not sizes:
            await asyncio.sleep(0.001)
        small = await b.submit([1000, 1001])                         # arrives while piece 1 is scored
        small_done_before_big = not big.done()
        return await big, small, small_done_before_big, b

    big, small, small_first, b = run(main())
    assert big == [x * 2 for x in range(64)] and small == [2000, 2002]
    assert small_first                        # the small caller did not wait for the whole big request
    assert max(sizes) <= 8 and sum(sizes) == 66
    assert order.index(1000) < 16             # served in the batch after the first piece
    assert b.stats.units == 2 and b.stats.batches == len(sizes)


def test_wrong_result_count_is_an_error_not_a_mismatch():
    async def fn(items):
        return items[:-1]

    async def main():
        return await MicroBatcher(fn, max_batch=100, window_s=0).submit([1, 2, 3])

    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        run(main())
