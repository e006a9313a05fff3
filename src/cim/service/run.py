"""The reward service on the configured scorer, until interrupted: :func:`serve` (what `cim serve` runs,
through the stage :func:`cim.stages.serve.serve`) and :func:`main`, ``python -m cim.service``: the same in a
child process, started by :func:`cim.service.process.start` (for `cim train` and the Prefect flow) without the
service layer naming the command layer. Errors end as `cim serve`'s do: one line and exit code 2 for an error
the user can fix (``CIM_DEBUG=1``/``--debug``: the traceback too), 130 when interrupted."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Sequence

__all__ = ["serve", "main"]

log = logging.getLogger(__name__)
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


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
          f"index={info['index_checksum']} auth={'bearer' if token else 'none'}"
          + (f" guards={','.join(info['reward']['guards'])}" if info["reward"].get("guards") else ""),
          file=sys.stderr, flush=True)
    app = build_app(service, token=token, max_request_bytes=int(s.max_request_mb * (1 << 20)),
                    max_request_items=s.max_request_items,
                    body_timeout_s=s.body_timeout_s if body_timeout_s is None else body_timeout_s)
    serve_forever(app, host, port,
                  header_timeout_s=s.header_timeout_s if header_timeout_s is None else header_timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cim.service",
                                     description="the reward service in a child process (`cim serve` for people)")
    parser.add_argument("--params", required=True, help="params file")
    parser.add_argument("--host", default=None, help="bind address (default train.service.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default train.service.port)")
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args(argv)
    debug = args.debug or os.environ.get("CIM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    try:
        from cim.config import load_config

        cfg = load_config(args.params, list(args.overrides))
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        serve(cfg, host=args.host, port=args.port)
        return 0
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("cim serve: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (as cim.cli's boundary: a user's error is one line, a bug re-raises)
        from cim.errors import user_message

        message = user_message(exc)
        if message is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"cim serve: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
