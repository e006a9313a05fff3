"""Parse a command module's arguments the way `cim.cli` does (common --params and overrides, then its own)."""
from __future__ import annotations

import argparse


def parse_command_args(module, argv):
    p = argparse.ArgumentParser()
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*")
    module.add_arguments(p)
    return p.parse_intermixed_args(argv)
