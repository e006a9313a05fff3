"""The reward service and its clients over loopback (127.0.0.1, a free port), with the real tiny scorer."""
import asyncio
import json
import socket
import time

import httpx
import pytest

from support.service_checks import assert_same_results, tripwire_scorer
from support.train_world import captions_for, config, guarded_scorer, params_file, scorer, world

from cim.service.client import AsyncRewardClient, RewardClient, ServiceError
from cim.service.server import RewardService, ServerHandle, build_app

POISON = "\ud800 x"      # a lone UTF-16 surrogate: valid JSON, no text; the tokenizer raises TypeError on it


async def _concurrently(url, requests, max_connections=32, **client_kwargs):
    """Each request (a list of items) from its own task; answers or the exceptions raised."""
    client = AsyncRewardClient(url, max_connections=max_connections, **client_kwargs)
    try:
        return await asyncio.gather(*(client.score(r) for r in requests), return_exceptions=True)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def server():
    service = RewardService(scorer(), max_batch=512, window_s=0.02)
    with ServerHandle(build_app(service, max_request_bytes=64 << 10, max_request_items=64)) as handle:
        yield handle, service


@pytest.fixture(scope="module")
def guarded():
    service = RewardService(scorer(), max_batch=512, window_s=0.0)
    with ServerHandle(build_app(service, token="s3cret")) as handle:
        yield handle


def test_binds_loopback_on_a_free_port(server):
    handle, _ = server
    assert handle.host == "127.0.0.1" and handle.port > 0


def test_scores_equal_the_scorer_and_keep_order(server):
    handle, _ = server
    items = captions_for(world()["rows"])
    direct = scorer().score(items)
    with RewardClient(handle.url) as client:
        got = client.score(items)
    assert len(got) == len(items)
    for g, d in zip(got, direct):
        assert g["error"] is None
        assert g["score"] == pytest.approx(d["score"], abs=1e-6)
        assert g["grc"] == pytest.approx(d["grc"], abs=1e-6) and g["qir"] == pytest.approx(d["qir"], abs=1e-6)
        assert g["retrieved"] == d["retrieved"]
    # the reward orders caption quality on this world: right > wrong for the same image
    row = world()["rows"][0]
    right, wrong = RewardClient(handle.url).score([
        {"caption": row["text"], "image_id": row["id"]},
        {"caption": "a purple hexagon on a striped background", "image_id": row["id"]}])
    assert right["score"] > wrong["score"]


def test_bad_items_get_errors_and_the_rest_is_scored(server):
    handle, _ = server
    good = captions_for(world()["rows"][:1])[0]
    items = [good, {"caption": "", "image_id": good["image_id"]}, {"caption": "x", "image_id": "no-such-id"},
             {"caption": "x"}, "not an object", {**good, "id": "7"}]
    with RewardClient(handle.url) as client:
        got = client.score(items)
    assert got[0]["error"] is None and got[5]["error"] is None and got[5]["id"] == "7"
    assert all(got[i]["error"] and got[i]["score"] is None for i in (1, 2, 3, 4))
    assert "unknown image_id" in got[2]["error"]


def test_concurrent_requests_are_batched(server):
    handle, service = server
    rows = world()["rows"]
    before = service.batcher.stats.batches
    calls_before = scorer().calls

    async def main():
        client = AsyncRewardClient(handle.url, max_connections=32)
        try:
            return await asyncio.gather(*(client.score([{"caption": r["text"], "image_id": r["id"], "id": str(i)}])
                                          for i, r in enumerate(rows)))
        finally:
            await client.aclose()

    answers = asyncio.run(main())
    assert [a[0]["id"] for a in answers] == [str(i) for i in range(len(rows))]
    batches = service.batcher.stats.batches - before
    assert batches < len(rows) / 2, f"{len(rows)} concurrent requests took {batches} scorer calls"
    assert scorer().calls - calls_before == batches


def test_health_reports_models_corpus_and_checksum(server):
    handle, _ = server
    with RewardClient(handle.url) as client:
        h = client.health()
    assert h["status"] == "ok"
    assert h["corpus_size"] == len(world()["rows"])
    assert h["text_encoder"] and h["index_checksum"]
    assert h["reward"]["top_k"] == 3 and h["batching"]["max_batch"] == 512


@pytest.fixture(scope="module")
def with_guards():
    service = RewardService(guarded_scorer(), max_batch=512, window_s=0.0)
    with ServerHandle(build_app(service)) as handle:
        yield handle


def test_a_guarded_scorer_sends_upsilon_and_every_guard_through_both_clients(with_guards, server):
    row = world()["rows"][0]
    items = [{"caption": row["text"], "image_id": row["id"]},
             {"caption": f"{row['text']} {row['text']} {row['text']}", "image_id": row["id"]},   # repeated
             {"caption": "", "image_id": row["id"]}]
    direct = guarded_scorer().score(items)
    with RewardClient(with_guards.url) as client:
        got, health = client.score(items), client.health()

    async def asynchronous():
        client = AsyncRewardClient(with_guards.url)
        try:
            return await client.score(items)
        finally:
            await client.aclose()

    for answer in (got, asyncio.run(asynchronous())):
        for g, d in zip(answer[:2], direct[:2]):
            assert list(g["guards"]) == ["repetition", "length", "fluency"] and g["error"] is None
            assert g["guards"] == pytest.approx(d["guards"], abs=1e-9)
            assert g["upsilon"] == pytest.approx(d["upsilon"], abs=1e-6)
            assert g["score"] == pytest.approx(g["upsilon"] + sum(g["guards"].values()), abs=1e-6)  # weight 1 each
        assert answer[0]["guards"]["repetition"] == 0 and answer[1]["guards"]["repetition"] < -0.5
        assert answer[1]["score"] < answer[1]["upsilon"]
        assert answer[2]["error"] and answer[2]["guards"] == {} and answer[2]["upsilon"] is None
    assert list(health["reward"]["guards"]) == ["repetition", "length", "fluency"]
    assert health["reward"]["guards"]["length"]["weight"] == 1.0
    # without guards: upsilon is the score, no guard values, and /health names none
    with RewardClient(server[0].url) as client:
        (plain,), plain_health = client.score(items[:1]), client.health()
    assert plain["upsilon"] == plain["score"] and plain["guards"] == {} and "guards" not in plain_health["reward"]


def test_results_go_out_as_strict_json_guard_values_too():
    from cim.service.server import _finite

    assert _finite({"fluency": float("nan"), "length": -0.5}) == {"fluency": None, "length": -0.5}
    assert _finite(float("inf")) is None and _finite([1]) == [1]


def test_request_size_is_bounded(server):
    handle, _ = server
    item = captions_for(world()["rows"][:1])[0]
    too_many = httpx.post(handle.url + "/score", json={"items": [item] * 65})
    assert too_many.status_code == 413
    too_big = httpx.post(handle.url + "/score", json={"items": [{"caption": "a" * (80 << 10), "image_id": "x"}]})
    assert too_big.status_code == 413
    with RewardClient(handle.url, max_request_items=64) as client:   # the client splits long lists
        assert len(client.score([item] * 130)) == 130
    assert httpx.post(handle.url + "/score", content=b"{not json").status_code == 400
    assert httpx.post(handle.url + "/score", json={"captions": []}).status_code == 400


def test_bearer_token(guarded):
    item = captions_for(world()["rows"][:1])[0]
    assert httpx.post(guarded.url + "/score", json={"items": [item]}).status_code == 401
    assert httpx.post(guarded.url + "/score", json={"items": [item]},
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    with RewardClient(guarded.url, token="wrong") as client:
        with pytest.raises(ServiceError) as err:
            client.score([item])
        assert err.value.status == 401
    with RewardClient(guarded.url, token="s3cret") as client:
        assert client.score([item])[0]["error"] is None
        assert client.health()["status"] == "ok"          # health stays open for liveness probes


def test_client_retries_then_reports_a_dead_service():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                          # nothing listens here
    with RewardClient(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01, timeout_s=2) as client:
        with pytest.raises(ServiceError):
            client.score([{"caption": "a", "image_id": "b"}])


def test_cim_serve_process_starts_answers_and_stops():
    """`python -m cim.service` (what `cim serve` runs) in a child process, started and checked like `cim train`."""
    from cim.service import process

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config(f"train.service.url=http://127.0.0.1:{port}")
    handle = process.ensure(cfg, str(params_file()), [f"train.service.url=http://127.0.0.1:{port}"])
    try:
        assert handle.process is not None and handle.health["corpus_size"] == len(world()["rows"])
        with RewardClient(handle.url) as client:
            row = world()["rows"][3]
            [r] = client.score([{"caption": row["text"], "image_id": row["id"]}])
        assert r["score"] == pytest.approx(scorer().score([{"caption": row["text"], "image_id": row["id"]}])[0]["score"],
                                           abs=1e-5)
        again = process.ensure(cfg, str(params_file()), [])      # already up: reused, not restarted
        assert again.process is None
    finally:
        handle.stop()
    assert handle.process.poll() is not None
    assert process.check(handle.url) is None


# -- one bad request fails alone ------------------------------------------------------------------------------
def test_a_poisoned_caption_fails_only_its_own_item(server):
    """Before: the surrogate made the tokenizer raise and all 15 good concurrent requests got HTTP 500."""
    handle, _ = server
    good = [[it] for it in captions_for(world()["rows"][:15])]
    clean = asyncio.run(_concurrently(handle.url, good))
    poisoned = asyncio.run(_concurrently(handle.url, good + [[{"caption": POISON, "image_id": good[0][0]["image_id"]}]],
                                         retries=0))
    failed_good = [r for r in poisoned[:-1] if isinstance(r, Exception)]
    assert failed_good == []
    for got, want in zip(poisoned[:-1], clean):
        assert_same_results(got, want)
    [bad] = poisoned[-1]
    assert bad["score"] is None and "UTF-8" in bad["error"]


def test_a_request_that_makes_the_scorer_raise_gets_422_and_the_batch_is_scored_without_it():
    """Beyond validated causes: the batch is re-scored apart, only the guilty request fails (422, not retried)."""
    service = RewardService(tripwire_scorer(), max_batch=512, window_s=0.05)
    with ServerHandle(build_app(service)) as handle:
        good = [[it] for it in captions_for(world()["rows"][:15])]
        want = [scorer().score(g) for g in good]
        answers = asyncio.run(_concurrently(handle.url, [[{"caption": "a TRIPWIRE", "image_id": good[0][0]["image_id"]}]]
                                            + good, backoff_s=5.0))
        err = answers[0]
        assert isinstance(err, ServiceError) and err.status == 422 and "TypeError" in str(err)
        for got, w in zip(answers[1:], want):
            assert not isinstance(got, Exception)
            assert_same_results(got, w)
        assert service.batcher.stats.failed_calls <= 1 + 2 * 4       # bisection, and no retries of the 422


def test_a_big_request_does_not_starve_small_ones():
    """A request above max_batch is scored in pieces; a small one sent meanwhile is answered before it ends."""
    service = RewardService(scorer(), max_batch=8, window_s=0.0)
    with ServerHandle(build_app(service)) as handle:
        big_items = captions_for(world()["rows"]) * 4                          # 96 items: 12 pieces
        small_items = captions_for(world()["rows"][:1])

        async def main():
            client = AsyncRewardClient(handle.url, max_connections=4)
            try:
                big = asyncio.ensure_future(client.score(big_items))
                while service.batcher.stats.batches < 1:
                    await asyncio.sleep(0.005)
                small = await client.score(small_items)
                return small, big.done(), await big
            finally:
                await client.aclose()

        small, big_done_first, big = asyncio.run(main())
    assert not big_done_first
    assert_same_results(big, scorer().score(big_items))
    assert_same_results(small, scorer().score(small_items))
    assert service.batcher.stats.largest <= 8


# -- strict input at the door ---------------------------------------------------------------------------------
def test_bodies_that_are_not_strict_json_or_have_non_string_ids_are_400(server):
    handle, _ = server
    row = world()["rows"][0]
    post = lambda body: httpx.post(handle.url + "/score", content=body, headers={"Content-Type": "application/json"})
    deep = post(b"[" * 60_000)                        # under the 64 KB limit; before: 500 (RecursionError)
    assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
    item = json.dumps({"caption": "a red circle", "image_id": row["id"]})
    for bad_id, why in (("NaN", "NaN"), ("Infinity", "Infinity"), ("1e999", "out of range"), ("7", "string")):
        r = post(f'{{"items": [{item[:-1]}, "id": {bad_id}}}]}}'.encode())   # before: NaN was echoed as NaN
        assert r.status_code == 400 and why in r.json()["error"], (bad_id, r.text)
    ok = post(f'{{"items": [{item[:-1]}, "id": "x1"}}]}}'.encode())
    assert ok.status_code == 200 and ok.json()["results"][0]["id"] == "x1"
    json.loads(ok.text, parse_constant=lambda c: pytest.fail(f"{c} in the answer"))   # strict JSON out


# -- slow clients ------------------------------------------------------------------------------------------
def _open_after(socks, seconds):
    time.sleep(seconds)
    still = 0
    for s in socks:
        s.setblocking(False)
        try:
            still += 0 if s.recv(1) == b"" else 1
        except BlockingIOError:
            still += 1
        except OSError:
            pass
        s.close()
    return still


def test_slow_headers_and_slow_bodies_are_cut_off():
    """Before: 40 connections trickling headers were all still open after 20 s."""
    service = RewardService(scorer(), max_batch=64, window_s=0.0)
    with ServerHandle(build_app(service, body_timeout_s=1.0), header_timeout_s=1.0) as handle:
        heads = []
        for _ in range(40):
            s = socket.create_connection((handle.host, handle.port))
            s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
            heads.append(s)
        for _ in range(4):                                           # keep trickling header bytes
            time.sleep(0.4)
            for s in heads:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
        assert _open_after(heads, 1.0) == 0
        with socket.create_connection((handle.host, handle.port)) as s:
            s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"items\": [")
            s.settimeout(10)
            t0 = time.monotonic()
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5
        with RewardClient(handle.url) as client:                      # the service still serves
            assert client.score(captions_for(world()["rows"][:1]))[0]["error"] is None


def test_client_calls_are_bounded_by_one_deadline_across_retries():
    """A service that accepts and never answers: without a deadline 4 attempts x 1 s + backoff = 7.5 s."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)                                       # accepts (backlog), never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        item = [{"caption": "a", "image_id": "b"}]
        with RewardClient(url, timeout_s=1.0, retries=3, backoff_s=0.5, deadline_s=2.0) as client:
            t0 = time.monotonic()
            with pytest.raises(ServiceError, match="deadline of 2 s"):
                client.score(item)
            assert time.monotonic() - t0 < 3.0
        t0 = time.monotonic()
        [err] = asyncio.run(_concurrently(url, [item], timeout_s=1.0, retries=3, backoff_s=0.5, deadline_s=2.0))
        assert isinstance(err, ServiceError) and "deadline" in str(err) and time.monotonic() - t0 < 3.0
