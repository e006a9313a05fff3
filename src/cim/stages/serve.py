"""The reward service as a stage: the configured scorer behind HTTP (:mod:`cim.service.server`), batching
concurrent requests, until interrupted."""
from __future__ import annotations

import logging
import sys

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(cfg, *, host: str | None = None, port: int | None = None, index_dir: str | None = None,
          device: str | None = None, max_batch: int | None = None, batch_window_ms: float | None = None,
          header_timeout_s: float | None = None, body_timeout_s: float | None = None,
          token_env: str | None = None) -> None:
    """Serve ``POST /score`` and ``GET /health`` on ``host:port`` (default ``train.service``'s); each argument
    left ``None`` takes its ``train.service`` (or ``index``) setting. Blocks until interrupted."""
    from cim.config import check_names
    from cim.reward.scorer import Scorer
    from cim.service.client import read_token
    from cim.service.process import is_loopback_host
    from cim.service.server import RewardService, build_app, serve_forever

    check_names(cfg, "encoders.text.name", "encoders.image.name")
    s = cfg.train.service
    host = host or s.host
    port = s.port if port is None else port
    token = read_token(s.token_env if token_env is None else token_env)
    if not is_loopback_host(host) and token is None:
        log.warning("binding %s without a bearer token: anyone who can reach this port can use the scorer "
                    "(set %s)", host, s.token_env)
    scorer = Scorer.from_config(cfg, index_dir=index_dir, device=device)
    service = RewardService(scorer, max_batch=max_batch or s.max_batch,
                            window_s=(s.batch_window_ms if batch_window_ms is None else batch_window_ms) / 1e3)
    info = service.info
    print(f"cim serve: http://{host}:{port}  corpus={info['corpus_size']} text={info['text_encoder']} "
          f"index={info['index_checksum']} auth={'bearer' if token else 'none'}", file=sys.stderr, flush=True)
    app = build_app(service, token=token, max_request_bytes=int(s.max_request_mb * (1 << 20)),
                    max_request_items=s.max_request_items,
                    body_timeout_s=s.body_timeout_s if body_timeout_s is None else body_timeout_s)
    serve_forever(app, host, port, header_timeout_s=s.header_timeout_s if header_timeout_s is None else header_timeout_s)
