"""`cim serve`: the reward service over HTTP (see :mod:`cim.service.server`)."""
from __future__ import annotations

import argparse
import logging
import sys

from cim.service.process import is_loopback_host

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default train.service.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default train.service.port)")
    parser.add_argument("--index-dir", default=None, help="index directory (default index.out_dir)")
    parser.add_argument("--device", default=None, help="search device: auto | cpu | cuda (default index.device)")
    parser.add_argument("--max-batch", type=int, default=None, help="most captions in one scorer call")
    parser.add_argument("--batch-window-ms", type=float, default=None, help="how long a batch waits to fill")
    parser.add_argument("--header-timeout-s", type=float, default=None,
                        help="close a connection that has not sent its request head (or stays idle) this long "
                             "(default 10)")
    parser.add_argument("--body-timeout-s", type=float, default=None,
                        help="answer 408 to a request whose body has not arrived this long after its head "
                             "(default 30)")
    parser.add_argument("--token-env", default=None,
                        help="env var holding the bearer token (default train.service.token_env); "
                             "the token is never taken on the command line")


def run(args: argparse.Namespace) -> int:
    from cim.config import load_config
    from cim.reward.scorer import Scorer
    from cim.service.client import read_token
    from cim.service.server import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, RewardService, build_app, serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_config(args.params, args.overrides)
    s = cfg.train.service
    host = args.host or s.host
    port = s.port if args.port is None else args.port
    token = read_token(args.token_env if args.token_env is not None else s.token_env)
    if not is_loopback_host(host) and token is None:
        log.warning("binding %s without a bearer token: anyone who can reach this port can use the scorer "
                    "(set %s)", host, s.token_env)
    scorer = Scorer.from_config(cfg, index_dir=args.index_dir, device=args.device)
    service = RewardService(scorer, max_batch=args.max_batch or s.max_batch,
                            window_s=(args.batch_window_ms if args.batch_window_ms is not None
                                      else s.batch_window_ms) / 1e3)
    info = service.info
    print(f"cim serve: http://{host}:{port}  corpus={info['corpus_size']} text={info['text_encoder']} "
          f"index={info['index_checksum']} auth={'bearer' if token else 'none'}", file=sys.stderr, flush=True)
    app = build_app(service, token=token, max_request_bytes=int(s.max_request_mb * (1 << 20)),
                    max_request_items=s.max_request_items,
                    body_timeout_s=BODY_TIMEOUT_S if args.body_timeout_s is None else args.body_timeout_s)
    serve_forever(app, host, port,
                  header_timeout_s=HEADER_TIMEOUT_S if args.header_timeout_s is None else args.header_timeout_s)
    return 0
