"""The reward service and its clients over loopback (127.0.0.1, a free port), with the real tiny scorer."""
import asyncio
import json
import socket

import httpx
import pytest

from test_train_support import captions_for, config, params_file, scorer, world

from cim.service.client import AsyncRewardClient, RewardClient, ServiceError
from cim.service.server import RewardService, ServerHandle, build_app


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
             {"caption": "x"}, "not an object", {**good, "id": 7}]
    with RewardClient(handle.url) as client:
        got = client.score(items)
    assert got[0]["error"] is None and got[5]["error"] is None and got[5]["id"] == 7
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
            return await asyncio.gather(*(client.score([{"caption": r["text"], "image_id": r["id"], "id": i}])
                                          for i, r in enumerate(rows)))
        finally:
            await client.aclose()

    answers = asyncio.run(main())
    assert [a[0]["id"] for a in answers] == list(range(len(rows)))
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
