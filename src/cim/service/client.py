"""Clients for the reward service: :class:`RewardClient` (sync, httpx) and :class:`AsyncRewardClient` (aiohttp).

Both split a long list into requests of at most ``max_request_items``, retry connection errors and 5xx with
exponential backoff (``retries`` times), never retry 4xx (a bad token or an oversized request will not get
better), and check that the answer has one result per item, each with every key of
:class:`cim.reward.schema.RewardResult`.

Time is bounded twice: ``timeout_s`` per attempt and ``deadline_s`` for the whole call (all chunks, attempts
and backoff sleeps): each attempt gets what is left of the deadline, and no retry starts after it. The worst
case of one ``score`` call is therefore ``deadline_s``, not ``timeout_s x (retries + 1)``. Every default of
both clients is ``train.service``'s (:class:`cim.config.schema.RewardServiceConfig`).

Replicas: ``url`` may list several services (``"http://a:3545,http://b:3545"``, replicas of `cim serve` over
the same index). Requests go round-robin over the replicas that are up; a replica that fails (connection
error, 5xx) is skipped for ``cooldown_s`` and the attempt is retried on the next; a long list is split so
every replica gets a part. ``wait_ready`` waits for every replica (docs/training.md, "Replicas"), as does
:func:`cim.service.process.start` for the one it started: both through :func:`wait_healthy`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Optional, Sequence

from cim.config.schema import RewardServiceConfig
from cim.reward.schema import RewardResult, missing_keys

log = logging.getLogger(__name__)

_DEFAULT = RewardServiceConfig()   # the clients' keyword defaults (train.service.*), never restated here
# idle connections are dropped before the service's header/idle timeout (train.service.header_timeout_s)
# would close them under a request
_KEEPALIVE_S = _DEFAULT.header_timeout_s / 2
_POLL_S = 0.5                      # wait_healthy: between two rounds of /health
HEALTH_S = 5.0                     # one /health attempt while waiting for a service (or checking one is up)


def read_token(token_env: str) -> Optional[str]:
    """The bearer token from the environment variable named ``token_env`` (None when unnamed, unset or empty);
    the one place a token is read, for the service and every client."""
    value = os.environ.get(token_env, "") if token_env else ""
    return value or None


class ServiceError(RuntimeError):
    """The service could not be reached or answered with an error."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


def _headers(token: Optional[str]) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(results: Any, n: int) -> list[RewardResult]:
    if not isinstance(results, list) or len(results) != n:
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise ServiceError(f"service answered {got} results for {n} items")
    for r in results:
        missing = missing_keys(r)
        if missing:
            raise ServiceError(f"service answered a result without {', '.join(missing)} "
                               "(a service of another version?)")
    return results


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds, self.end = float(seconds), time.monotonic() + float(seconds)

    def left(self) -> float:
        return self.end - time.monotonic()


class _Call:
    """The retry policy of both clients, for one call: attempt after attempt on the replicas, each within what
    is left of the call's deadline; after a failure the next replica that is up is tried at once, else the
    same after an exponential backoff, never past ``retries`` retries or the deadline. Each call has its own
    object (the clients hold no per-call state, so one client serves many threads).

        call = _Call(client, "POST /score", deadline)
        while True:
            base, timeout = call.attempt()          # raises when the deadline is spent
            ... on success: return; on a 4xx: raise; else:
            pause = call.failed(base, error)        # None: give up (raise call.error())
            sleep(pause)
    """

    def __init__(self, client, what: str, deadline: Optional[_Deadline] = None, base_url: Optional[str] = None,
                 retries: Optional[int] = None):
        self.replicas, self.base_url, self.backoff_s = client.replicas, base_url, client.backoff_s
        self.timeout_s, self.what = client.timeout_s, what
        self.retries = client.retries if retries is None else retries
        self.deadline = deadline or _Deadline(client.deadline_s)
        self.n, self.last = 0, None

    def attempt(self) -> tuple[str, float]:
        left = self.deadline.left()
        if left <= 0:
            raise self._expired()
        self.n += 1
        return self.base_url or self.replicas.pick(), min(self.timeout_s, left)

    def failed(self, base: str, error: Exception) -> Optional[float]:
        """Seconds to wait before the next attempt (0: another replica, at once); None: no more attempts."""
        self.last = error
        self.replicas.failed(base)
        retry = self.n - 1                                       # the retry this attempt was (0: the first try)
        if retry >= self.retries:
            return None
        if self.replicas.up() and self.base_url is None:
            return 0.0
        pause = self.backoff_s * 2 ** retry
        return pause if pause < self.deadline.left() else None

    def error(self) -> Exception:
        return self.last if self.n > self.retries else self._expired()

    def _expired(self) -> "ServiceError":
        return ServiceError(f"{self.what}: no answer within the call's deadline of {self.deadline.seconds:g} s"
                            + (f" (last error: {self.last})" if self.last else ""), getattr(self.last, "status", None))


def _chunks(items: Sequence[dict], size: int, parts: int = 1) -> list[list[dict]]:
    """Requests of at most ``size`` items, at least ``parts`` of them (one per replica) when there are enough."""
    size = max(1, min(size, -(-len(items) // max(1, parts))))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def split_urls(url: str | Sequence[str]) -> list[str]:
    """``"http://a:1,http://b:2"`` (or a list) -> the replicas' base URLs, in order, without trailing slashes."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip().rstrip("/") for u in parts if u and u.strip()]
    if not urls:
        raise ValueError("no reward service URL given")
    return urls


class Replicas:
    """Round-robin over replicas, skipping one that failed in the last ``cooldown_s`` (all down: the one
    that failed longest ago is tried, so a recovered replica is found again)."""

    def __init__(self, urls: Sequence[str], cooldown_s: float = _DEFAULT.cooldown_s):
        self.urls, self.cooldown_s = list(urls), float(cooldown_s)
        self._next = 0
        self._down: dict[str, float] = {}
        self.sent = {u: 0 for u in self.urls}      # requests sent to each replica (observable spreading)

    def pick(self) -> str:
        now = time.monotonic()
        for k in range(len(self.urls)):
            url = self.urls[(self._next + k) % len(self.urls)]
            if now - self._down.get(url, -1e18) >= self.cooldown_s:
                self._next = (self._next + k + 1) % len(self.urls)
                break
        else:
            url = min(self.urls, key=lambda u: self._down[u])
        self.sent[url] += 1
        return url

    def failed(self, url: str) -> None:
        self._down[url] = time.monotonic()

    def up(self) -> int:
        now = time.monotonic()
        return sum(now - self._down.get(u, -1e18) >= self.cooldown_s for u in self.urls)


def wait_healthy(ask: Callable[[str], dict], urls: Sequence[str], timeout_s: float, interval_s: float = _POLL_S,
                 alive: Optional[Callable[[], None]] = None) -> list[dict]:
    """The one "wait until healthy" (both clients' ``wait_ready``, :func:`cim.service.process.start`): round
    after round, ``interval_s`` apart, ask each URL not yet ready for its ``/health`` (``ask(url)``: the health,
    or :class:`ServiceError`) until every one has answered; returns their healths in ``urls``' order. Each URL
    is asked at least once; once ``timeout_s`` has passed a :class:`ServiceError` names those not ready.
    ``alive`` runs before each round and raises to stop waiting (a child process that exited)."""
    end = time.monotonic() + timeout_s
    ready: dict[str, dict] = {}
    while True:
        if alive is not None:
            alive()
        for url in urls:
            if url not in ready:
                try:
                    ready[url] = ask(url)
                except ServiceError:
                    pass
        if len(ready) == len(urls):
            return [ready[u] for u in urls]
        if time.monotonic() >= end:
            missing = [u for u in urls if u not in ready]
            raise ServiceError(f"reward service at {', '.join(missing)} not ready after {timeout_s:.0f} s")
        time.sleep(interval_s)


class RewardClient:
    """Synchronous client: ``RewardClient(url).score([{"caption": ..., "image_id": ...}])``."""

    def __init__(self, url: str | Sequence[str], token: Optional[str] = None,
                 timeout_s: float = _DEFAULT.timeout_s, retries: int = _DEFAULT.retries,
                 max_request_items: int = _DEFAULT.max_request_items, backoff_s: float = _DEFAULT.backoff_s,
                 deadline_s: float = _DEFAULT.deadline_s, cooldown_s: float = _DEFAULT.cooldown_s):
        import httpx

        self.replicas = Replicas(split_urls(url), cooldown_s)
        self.url = ",".join(self.replicas.urls)
        self.retries, self.max_request_items, self.backoff_s = retries, max_request_items, backoff_s
        self.timeout_s, self.deadline_s = float(timeout_s), float(deadline_s)
        self._http = httpx.Client(timeout=timeout_s, headers=_headers(token),
                                  limits=httpx.Limits(keepalive_expiry=_KEEPALIVE_S))

    def _request(self, method: str, path: str, deadline: Optional[_Deadline] = None,
                 base_url: Optional[str] = None, retries: Optional[int] = None, **kwargs) -> Any:
        import httpx

        call = _Call(self, f"{method} {self.url}{path}", deadline, base_url, retries)
        while True:
            base, timeout = call.attempt()
            try:
                resp = self._http.request(method, base + path, timeout=timeout, **kwargs)
            except httpx.TransportError as exc:
                err = ServiceError(f"{method} {base}{path}: {exc}")
            else:
                if resp.status_code < 400:
                    return resp.json()
                err = ServiceError(f"{method} {base}{path}: HTTP {resp.status_code} {resp.text[:200]}",
                                   status=resp.status_code)
                if resp.status_code < 500:
                    raise err
            pause = call.failed(base, err)
            if pause is None:
                raise call.error()
            time.sleep(pause)

    def health(self) -> dict:
        return self._request("GET", "/health")

    def health_of(self, url: str) -> dict:
        """``/health`` of the replica ``url``, asked once (no retry, no other replica)."""
        return self._request("GET", "/health", base_url=url, retries=0)

    def score(self, items: Sequence[dict]) -> list[RewardResult]:
        deadline = _Deadline(self.deadline_s)
        out: list[RewardResult] = []
        for chunk in _chunks(items, self.max_request_items):
            answer = self._request("POST", "/score", deadline, json={"items": chunk})
            out.extend(_check(answer.get("results") if isinstance(answer, dict) else None, len(chunk)))
        return out

    def wait_ready(self, timeout_s: float = _DEFAULT.startup_timeout_s, interval_s: float = _POLL_S) -> dict:
        """Every replica's ``/health`` once all answer (:func:`wait_healthy`): the first replica's health with
        ``replicas`` (each one's) added."""
        ready = wait_healthy(self.health_of, self.replicas.urls, timeout_s, interval_s)
        return {**ready[0], "replicas": ready}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRewardClient:
    """Asyncio client; one ``aiohttp.ClientSession`` per event loop, opened on first use."""

    def __init__(self, url: str | Sequence[str], token: Optional[str] = None,
                 timeout_s: float = _DEFAULT.timeout_s, retries: int = _DEFAULT.retries,
                 max_request_items: int = _DEFAULT.max_request_items, backoff_s: float = _DEFAULT.backoff_s,
                 max_connections: int = _DEFAULT.max_connections, deadline_s: float = _DEFAULT.deadline_s,
                 cooldown_s: float = _DEFAULT.cooldown_s):
        self.replicas = Replicas(split_urls(url), cooldown_s)
        self.url = ",".join(self.replicas.urls)
        self.token, self.timeout_s, self.retries = token, float(timeout_s), retries
        self.max_request_items, self.backoff_s, self.max_connections = max_request_items, backoff_s, max_connections
        self.deadline_s = float(deadline_s)
        self._session = None

    async def _get_session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session._loop is not loop:
            self._session = aiohttp.ClientSession(
                headers=_headers(self.token), timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=_KEEPALIVE_S))
        return self._session

    async def _request(self, method: str, path: str, deadline: Optional[_Deadline] = None,
                       base_url: Optional[str] = None, **kwargs) -> Any:
        import aiohttp

        call = _Call(self, f"{method} {self.url}{path}", deadline, base_url)
        session = await self._get_session()
        while True:
            base, timeout = call.attempt()
            try:
                async with session.request(method, base + path, timeout=aiohttp.ClientTimeout(total=timeout),
                                           **kwargs) as resp:
                    if resp.status < 400:
                        return await resp.json()
                    err = ServiceError(f"{method} {base}{path}: HTTP {resp.status} {(await resp.text())[:200]}",
                                       status=resp.status)
                    if resp.status < 500:
                        raise err
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                err = ServiceError(f"{method} {base}{path}: {type(exc).__name__}: {exc}")
            pause = call.failed(base, err)
            if pause is None:
                raise call.error()
            await asyncio.sleep(pause)

    async def health(self) -> dict:
        return await self._request("GET", "/health")

    async def wait_ready(self, timeout_s: float = _DEFAULT.startup_timeout_s,
                         interval_s: float = _POLL_S) -> list[dict]:
        """Every replica's ``/health`` once all answer: :func:`wait_healthy`, on a worker thread (the event
        loop goes on), asking each replica with a synchronous client of this one's token."""
        def wait() -> list[dict]:
            with RewardClient(self.replicas.urls, token=self.token, timeout_s=HEALTH_S, retries=0) as client:
                return wait_healthy(client.health_of, self.replicas.urls, timeout_s, interval_s)

        return await asyncio.to_thread(wait)

    async def score(self, items: Sequence[dict]) -> list[RewardResult]:
        deadline = _Deadline(self.deadline_s)
        chunks = _chunks(items, self.max_request_items, self.replicas.up())
        answers = await asyncio.gather(*(self._request("POST", "/score", deadline, json={"items": c})
                                         for c in chunks))
        out: list[RewardResult] = []
        for chunk, answer in zip(chunks, answers):
            out.extend(_check(answer.get("results") if isinstance(answer, dict) else None, len(chunk)))
        return out

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
