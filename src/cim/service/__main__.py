"""``python -m cim.service [--params params.yaml] [key=value ...]``: the same as ``cim serve``."""
from __future__ import annotations

import argparse
import sys

from cim.service import commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cim.service", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    commands.add_arguments(parser)
    return commands.run(parser.parse_intermixed_args(argv))


if __name__ == "__main__":
    sys.exit(main())
