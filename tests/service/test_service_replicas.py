"""Replicas of the reward service behind one URL list (docs/training.md, "Replicas"): requests spread over
them, answers equal one replica's, a dead replica is skipped, readiness waits for every replica."""
import asyncio
import socket
import time

import pytest

from support.train_world import config, params_file, scorer, world

from cim.service.client import AsyncRewardClient, RewardClient, ServiceError
from cim.service.server import RewardService, ServerHandle, build_app


def _items(n):
    rows = world()["rows"]
    return [{"caption": rows[(i * 5) % len(rows)]["text"] if i % 2 else "a red circle",
             "image_id": rows[i % len(rows)]["id"]} for i in range(n)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _score_all(url, requests, **kwargs):
    client = AsyncRewardClient(url, **kwargs)
    try:
        return await asyncio.gather(*(client.score(r) for r in requests), return_exceptions=True), client.replicas.sent
    finally:
        await client.aclose()


def _scores(answers):
    return [[(r["score"], r["retrieved"]) for r in a] for a in answers]


def test_two_replicas_answer_as_one_and_a_dead_one_is_skipped():
    requests = [_items(7)[i:] for i in range(7)] * 4
    services = [RewardService(scorer(), max_batch=512, window_s=0.01) for _ in range(2)]
    one = ServerHandle(build_app(services[0]))
    two = ServerHandle(build_app(services[1]))
    urls = f"http://127.0.0.1:{one.port},http://127.0.0.1:{two.port}"
    try:
        single, _ = asyncio.run(_score_all(f"http://127.0.0.1:{one.port}", requests))
        before = [s.scored_items for s in services]
        spread, sent = asyncio.run(_score_all(urls, requests))
        assert not [a for a in single + spread if isinstance(a, Exception)]          # lost 0
        assert _scores(spread) == _scores(single)
        assert all(s.scored_items > b for s, b in zip(services, before))              # both replicas worked
        a, b = sent.values()                                     # round robin; a request of 2+ items is split
        assert abs(a - b) <= 1 and a + b > len(requests)

        with RewardClient(urls) as client:
            assert len(client.wait_ready(timeout_s=10)["replicas"]) == 2
    finally:
        two.close()
    # replica two is gone: every request is still answered, by replica one
    again, sent = asyncio.run(_score_all(urls, requests, backoff_s=0.01))
    one.close()
    assert not [a for a in again if isinstance(a, Exception)]
    assert _scores(again) == _scores(single)


def test_readiness_names_the_replica_that_is_not_up():
    service = RewardService(scorer(), max_batch=64, window_s=0.0)
    dead = f"http://127.0.0.1:{_free_port()}"
    with ServerHandle(build_app(service)) as live:
        urls = f"http://127.0.0.1:{live.port},{dead}"
        start = time.monotonic()
        with RewardClient(urls) as client, pytest.raises(ServiceError, match=f"{dead} not ready"):
            client.wait_ready(timeout_s=1.5, interval_s=0.2)
        assert time.monotonic() - start < 10


def test_train_flow_starts_every_replica_on_loopback():
    """What `cim train` and the Prefect train flow call: each replica of a URL list started and healthy."""
    from cim.service import process

    urls = f"http://127.0.0.1:{_free_port()},http://127.0.0.1:{_free_port()}"
    handle = process.ensure(config(f"train.service.url={urls}"), str(params_file()), [])
    try:
        assert handle.url == urls and handle.process is not None and len(handle.others) == 1
        with RewardClient(urls) as client:
            health = client.wait_ready(timeout_s=5)
            assert [h["corpus_size"] for h in health["replicas"]] == [len(world()["rows"])] * 2
            assert len(client.score(_items(6))) == 6
    finally:
        handle.stop()
    assert all(process.check(u) is None for u in urls.split(","))
