"""`cim serve`: the reward service over HTTP (see :mod:`cim.service.server`)."""
from __future__ import annotations

import argparse
import logging

from cim.cli import add_flag, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default train.service.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default train.service.port)")
    add_flag(parser, "index", default=None, help="index directory (default index.out_dir)")
    parser.add_argument("--device", default=None, help="search device: auto | cpu | cuda (default index.device)")
    parser.add_argument("--max-batch", type=int, default=None, help="most captions in one scorer call")
    parser.add_argument("--batch-window-ms", type=float, default=None, help="how long a batch waits to fill")
    parser.add_argument("--header-timeout-s", type=float, default=None,
                        help="close a connection that has not sent its request head (or stays idle) this long "
                             "(default train.service.header_timeout_s)")
    parser.add_argument("--body-timeout-s", type=float, default=None,
                        help="answer 408 to a request whose body has not arrived this long after its head "
                             "(default train.service.body_timeout_s)")
    parser.add_argument("--token-env", default=None,
                        help="env var holding the bearer token (default train.service.token_env); "
                             "the token is never taken on the command line")


def run(args: argparse.Namespace) -> int:
    from cim.stages.serve import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(load(args), host=args.host, port=args.port, index_dir=args.index, device=args.device,
          max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, header_timeout_s=args.header_timeout_s,
          body_timeout_s=args.body_timeout_s, token_env=args.token_env)
    return 0
