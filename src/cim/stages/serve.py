"""The reward service as a stage: the configured scorer behind HTTP (:mod:`cim.service.server`), batching
concurrent requests, until interrupted."""
from __future__ import annotations

__all__ = ["serve"]


def serve(cfg, *, host: str | None = None, port: int | None = None, index_dir: str | None = None,
          device: str | None = None, max_batch: int | None = None, batch_window_ms: float | None = None,
          header_timeout_s: float | None = None, body_timeout_s: float | None = None,
          token_env: str | None = None) -> None:
    """Serve ``POST /score`` and ``GET /health`` on ``host:port`` (default ``train.service``'s); each argument
    left ``None`` takes its ``train.service`` (or ``index``) setting. Blocks until interrupted
    (:func:`cim.service.run.serve`, which ``python -m cim.service`` runs in a child process)."""
    from cim.service.run import serve as run_service

    run_service(cfg, host=host, port=port, index_dir=index_dir, device=device, max_batch=max_batch,
                batch_window_ms=batch_window_ms, header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
                token_env=token_env)
