"""Clients for the reward service: :class:`RewardClient` (sync, httpx) and :class:`AsyncRewardClient` (aiohttp).

Both split a long list into requests of at most ``max_request_items``, retry connection errors and 5xx with
exponential backoff (``retries`` times), never retry 4xx (a bad token or an oversized request will not get
better), and check that the answer has one result per item.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional, Sequence

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """The service could not be reached or answered with an error."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


def _headers(token: Optional[str]) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(results: Any, n: int) -> list[dict]:
    if not isinstance(results, list) or len(results) != n:
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise ServiceError(f"service answered {got} results for {n} items")
    return results


def _chunks(items: Sequence[dict], size: int) -> list[list[dict]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class RewardClient:
    """Synchronous client: ``RewardClient(url).score([{"caption": ..., "image_id": ...}])``."""

    def __init__(self, url: str, token: Optional[str] = None, timeout_s: float = 120.0, retries: int = 3,
                 max_request_items: int = 4096, backoff_s: float = 0.5):
        import httpx

        self.url = url.rstrip("/")
        self.retries, self.max_request_items, self.backoff_s = retries, max_request_items, backoff_s
        self._http = httpx.Client(timeout=timeout_s, headers=_headers(token))

    def _request(self, method: str, path: str, **kwargs) -> Any:
        import httpx

        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, self.url + path, **kwargs)
            except httpx.TransportError as exc:
                last = ServiceError(f"{method} {self.url}{path}: {exc}")
            else:
                if resp.status_code < 400:
                    return resp.json()
                err = ServiceError(f"{method} {self.url}{path}: HTTP {resp.status_code} {resp.text[:200]}",
                                   status=resp.status_code)
                if resp.status_code < 500:
                    raise err
                last = err
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        assert last is not None
        raise last

    def health(self) -> dict:
        return self._request("GET", "/health")

    def score(self, items: Sequence[dict]) -> list[dict]:
        out: list[dict] = []
        for chunk in _chunks(items, self.max_request_items):
            out.extend(_check(self._request("POST", "/score", json={"items": chunk}).get("results"), len(chunk)))
        return out

    def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.5) -> dict:
        """Poll ``/health`` until it answers (bounded); raises :class:`ServiceError` on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._request_once("GET", "/health")
            except ServiceError:
                if time.monotonic() >= deadline:
                    raise ServiceError(f"reward service at {self.url} not ready after {timeout_s:.0f} s") from None
                time.sleep(interval_s)

    def _request_once(self, method: str, path: str) -> Any:
        retries, self.retries = self.retries, 0
        try:
            return self._request(method, path)
        finally:
            self.retries = retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRewardClient:
    """Asyncio client; one ``aiohttp.ClientSession`` per event loop, opened on first use."""

    def __init__(self, url: str, token: Optional[str] = None, timeout_s: float = 120.0, retries: int = 3,
                 max_request_items: int = 4096, backoff_s: float = 0.5, max_connections: int = 16):
        self.url = url.rstrip("/")
        self.token, self.timeout_s, self.retries = token, timeout_s, retries
        self.max_request_items, self.backoff_s, self.max_connections = max_request_items, backoff_s, max_connections
        self._session = None

    async def _get_session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session._loop is not loop:
            self._session = aiohttp.ClientSession(
                headers=_headers(self.token), timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_connections))
        return self._session

    async def _request(self, method: str, path: str, **kwargs) -> Any:
        import aiohttp

        session = await self._get_session()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                async with session.request(method, self.url + path, **kwargs) as resp:
                    if resp.status < 400:
                        return await resp.json()
                    err = ServiceError(f"{method} {self.url}{path}: HTTP {resp.status} {(await resp.text())[:200]}",
                                       status=resp.status)
                    if resp.status < 500:
                        raise err
                    last = err
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = ServiceError(f"{method} {self.url}{path}: {type(exc).__name__}: {exc}")
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2 ** attempt)
        assert last is not None
        raise last

    async def health(self) -> dict:
        return await self._request("GET", "/health")

    async def score(self, items: Sequence[dict]) -> list[dict]:
        chunks = _chunks(items, self.max_request_items)
        answers = await asyncio.gather(*(self._request("POST", "/score", json={"items": c}) for c in chunks))
        out: list[dict] = []
        for chunk, answer in zip(chunks, answers):
            out.extend(_check(answer.get("results") if isinstance(answer, dict) else None, len(chunk)))
        return out

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
