"""The reward service: one :class:`cim.reward.scorer.Scorer` behind HTTP, with dynamic batching.

Why aiohttp (not FastAPI + uvicorn): one library gives the server *and* the async client that runs inside
verl's reward workers (verl itself uses aiohttp there), it is already installed with mlflow, it has a request
body limit that answers 413 by itself (``client_max_size``), and the hot path has no per-request validation
layer: a request is a JSON list that goes straight into the batcher. The service is small enough that
FastAPI's schema machinery would be weight without benefit.

API (JSON):
- ``POST /score``   ``{"items": [{"caption": str, "image_id": str, "id"?: str}, ...]}``
  -> ``{"results": [{<every key of cim.reward.schema.RewardResult>, "id"?}, ...]}`` in order: ``score``
  (Υ plus the weighted guard terms when ``reward.guards`` names any), ``upsilon`` (the paper's Υ), ``grc``,
  ``qir``, ``guards`` (each guard's value, ``{}`` without guards), ...
  A bad item gets an ``error`` and ``null`` scores; the rest are scored. Refused whole: a body that is not
  strict JSON (malformed, nested too deeply, ``NaN``/``Infinity`` or a number out of range) or not
  ``{"items": [...]}``, or an ``id`` that is not a string: 400; too many items or bytes: 413; a body slower
  than ``body_timeout_s``: 408; a missing or wrong bearer token: 401; a request whose items make the scorer
  raise (the other requests of its batch are scored): 422.
- ``GET /health``   model names, corpus size, index checksum, reward settings (with ``guards``, name ->
  settings, and ``aggregate`` when configured), batching counters.

Concurrent requests are gathered by :class:`cim.service.batching.MicroBatcher` into one scorer call, run on
one worker thread (the scorer owns one device; the event loop keeps accepting while it works). Requests
above ``max_batch`` items are scored in pieces interleaved with the others. A connection that has not sent
its request head within ``header_timeout_s`` (or stays idle that long between requests) is closed.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from aiohttp import web

from cim.config.schema import RewardServiceConfig
from cim.reward.schema import RESULT_KEYS, empty_result
from cim.service.batching import MicroBatcher, UnitFailed

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("cim_service", object)
_DEFAULT = RewardServiceConfig()   # the keyword defaults here are train.service's, never restated


def _finite(value: Any) -> Any:
    """A result's value as strict JSON can carry it: a non-finite float is ``None``, in a dict too (``guards``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    return value


def _model_name(desc) -> str | None:
    if not isinstance(desc, dict):
        return None if desc is None else str(desc)
    name, model = desc.get("name"), desc.get("model")
    return f"{name}:{model}" if name and model else (model or name)


def scorer_info(scorer) -> dict:
    """What ``/health`` reports about the scorer: encoders, corpus size, index checksum, reward settings."""
    index = getattr(scorer, "index", None)
    meta = dict(getattr(index, "meta", None) or {})
    encoders = meta.get("encoders") if isinstance(meta.get("encoders"), dict) else {}
    text = encoders.get("text")
    if text is None and hasattr(getattr(scorer, "text_encoder", None), "describe"):
        text = scorer.text_encoder.describe()
    ids = getattr(index, "ids", None)
    checksum = meta.get("checksum")
    if checksum is None and meta.get("checksums") is not None:
        checksum = hashlib.sha256(json.dumps(meta["checksums"], sort_keys=True).encode()).hexdigest()[:16]
    if checksum is None and ids is not None:
        checksum = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return {
        "text_encoder": _model_name(text),
        "image_encoder": _model_name(encoders.get("image")),
        "corpus_size": len(ids) if ids is not None else None,
        "index_checksum": checksum,
        "index_kind": meta.get("kind"),
        "reward": scorer.settings(),
    }


class RewardService:
    """Holds the scorer, its worker thread and the batcher; knows nothing about HTTP."""

    def __init__(self, scorer, max_batch: int = _DEFAULT.max_batch, window_s: float = _DEFAULT.batch_window_ms / 1e3,
                 info: Optional[dict] = None):
        self.scorer = scorer
        self.info = info if info is not None else scorer_info(scorer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cim-scorer")
        self.batcher = MicroBatcher(self._score_batch, max_batch=max_batch, window_s=window_s)
        self.started = time.time()
        self.scored_items = 0
        self.failed_items = 0

    async def _score_batch(self, items: list[dict]) -> list[dict]:
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, self.scorer.score, items)
        failed = sum(1 for r in results if r.get("error"))
        self.scored_items += len(results) - failed
        self.failed_items += failed
        return results

    async def score(self, items: list[dict]) -> list[dict]:
        return await self.batcher.submit(items)

    def health(self) -> dict:
        return {"status": "ok", **self.info, "uptime_s": round(time.time() - self.started, 1),
                "scored_items": self.scored_items, "failed_items": self.failed_items,
                "batching": {"max_batch": self.batcher.max_batch, "window_ms": self.batcher.window_s * 1e3,
                             **self.batcher.stats.as_dict()}}

    async def aclose(self) -> None:
        await self.batcher.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _json_error(exc_class, message: str, **kwargs) -> web.HTTPException:
    return exc_class(text=json.dumps({"error": message}), content_type="application/json", **kwargs)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def parse_body(raw: bytes) -> Any:
    """Strict JSON: ValueError for malformed text, ``NaN``/``Infinity``, numbers that overflow to inf, and
    nesting too deep to parse (which Python's parser reports as RecursionError)."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _validate(body: Any, max_items: int) -> list[dict]:
    """Raises ``web.HTTPException`` for a body that is not ``{"items": [...]}`` or whose ids are not strings
    (ids route answers back to the caller's rows: a number would come back rounded or as NaN to some
    parsers, so a wrong-typed id is refused before any work, never silently echoed). Items are checked
    lightly here and fully by the scorer, which reports per-item errors."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise _json_error(web.HTTPBadRequest, 'body must be {"items": [...]}')
    items = body["items"]
    if len(items) > max_items:
        raise _json_error(web.HTTPRequestEntityTooLarge, f"{len(items)} items > {max_items}",
                          max_size=max_items, actual_size=len(items))
    for i, item in enumerate(items):
        if isinstance(item, dict) and "id" in item and not isinstance(item["id"], str):
            raise _json_error(web.HTTPBadRequest, f"items[{i}].id must be a string, got "
                              f"{type(item['id']).__name__}")
    return items


def _clean_item(item: Any) -> dict:
    """Only ``caption`` and ``image_id`` reach the scorer: the service never opens paths sent by a client."""
    if not isinstance(item, dict):
        return {"caption": None, "image_id": None, "_bad": f"item must be an object, got {type(item).__name__}"}
    out = {"caption": item.get("caption"), "image_id": item.get("image_id")}
    if out["image_id"] is None:
        out["_bad"] = "item needs 'image_id'"
    elif not isinstance(out["image_id"], str):
        out["image_id"] = str(out["image_id"])
    return out


def _scoring_failed(exc: Exception) -> web.HTTPException:
    """422 when the request's own items make the scorer raise (it failed alone while other requests of its
    batch were scored, or the scorer raised a TypeError/ValueError, which its per-item validation leaves
    only to inputs it did not foresee); 500 otherwise (the service itself is in trouble; clients retry)."""
    cause = exc.cause if isinstance(exc, UnitFailed) else exc
    if isinstance(exc, UnitFailed) or isinstance(cause, (TypeError, ValueError)):
        return _json_error(web.HTTPUnprocessableEntity, f"the scorer raised on this request's items "
                           f"({type(cause).__name__}: {str(cause)[:300]}); other requests were scored")
    log.error("scoring failed: %s: %s", type(cause).__name__, cause, exc_info=cause)
    return _json_error(web.HTTPInternalServerError, f"scoring failed: {type(cause).__name__}: {str(cause)[:300]}")


def build_app(service: RewardService, token: Optional[str] = None,
              max_request_bytes: int = int(_DEFAULT.max_request_mb * (1 << 20)),
              max_request_items: int = _DEFAULT.max_request_items,
              body_timeout_s: float = _DEFAULT.body_timeout_s) -> web.Application:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler):
        if expected is not None and request.path != "/health":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise _json_error(web.HTTPUnauthorized, "missing or wrong bearer token",
                                  headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    async def score(request: web.Request) -> web.Response:
        try:
            raw = await asyncio.wait_for(request.read(), body_timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise _json_error(web.HTTPRequestTimeout, f"request body not received within {body_timeout_s:g} s")
        try:
            body = parse_body(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _json_error(web.HTTPBadRequest, f"invalid JSON: {exc}")
        items = _validate(body, max_request_items)
        cleaned = [_clean_item(it) for it in items]
        good = [c for c in cleaned if "_bad" not in c]
        try:
            scored = iter(await service.score(good) if good else [])
        except Exception as exc:  # noqa: BLE001 - answered as 422 or 500, never a traceback page
            raise _scoring_failed(exc)
        results = []
        for raw_item, c in zip(items, cleaned):
            full = empty_result(c["_bad"]) if "_bad" in c else next(scored)
            r = {k: _finite(full.get(k)) for k in RESULT_KEYS}
            r["guards"] = r["guards"] or {}         # (a scorer without guard terms may leave them out)
            if isinstance(raw_item, dict) and "id" in raw_item:
                r["id"] = raw_item["id"]
            results.append(r)
        return web.json_response({"results": results}, dumps=_strict_dumps)

    async def health(request: web.Request) -> web.Response:
        return web.json_response(service.health())

    async def on_cleanup(app: web.Application) -> None:
        await service.aclose()

    app = web.Application(client_max_size=int(max_request_bytes), middlewares=[auth])
    app[SERVICE_KEY] = service
    app.router.add_post("/score", score)
    app.router.add_get("/health", health)
    app.on_cleanup.append(on_cleanup)
    return app


def _strict_dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False)


class ServerHandle:
    """A service running in this process on its own event loop thread (tests, benchmarks, notebooks)."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0,
                 header_timeout_s: float = _DEFAULT.header_timeout_s):
        import threading

        self.app, self.host = app, host
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout_s)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, args=(port,), daemon=True, name="cim-service")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("reward service did not start within 30 s")
        if self._error:
            raise self._error

    def _serve(self, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, port)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_forever(app: web.Application, host: str, port: int, header_timeout_s: float = _DEFAULT.header_timeout_s) -> None:
    """Blocking: what ``cim serve`` runs. ``header_timeout_s`` is aiohttp's keep-alive timeout, which runs from
    the moment a connection opens (or its last answer) until a complete request head has arrived: a client
    trickling its headers is cut off then, as is a connection left idle."""
    web.run_app(app, host=host, port=port, access_log=None, print=lambda msg: log.info(msg),
                keepalive_timeout=header_timeout_s)
