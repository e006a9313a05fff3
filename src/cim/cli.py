"""`cim <command>`: every DVC stage and flow step is one command.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; this file
only lists them, so ``cim --help`` stays fast (modules are imported when their command runs).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("cim.data.commands", "generate the demo world (corpus, training and benchmark images)"),
    "manifest": ("cim.data.manifest_command", "write a corpus manifest from a dataset's release format"),
    "index": ("cim.index.commands", "embed a corpus manifest in resumable shards and build the search index"),
    "score": ("cim.reward.commands", "score captions with the CIM reward (jsonl in, jsonl out)"),
    "verify": ("cim.reward.quality_order", "check that the reward tracks caption quality on the demo world"),
    "evaluate": ("cim.eval.commands", "score captions on the declared benchmarks: CAPTURE, fine-grained, "
                 "Relations QA, BLEU/METEOR, CIM"),
    "serve": ("cim.service.commands", "run the reward service (HTTP, dynamic batching)"),
    "prepare-train": ("cim.train.prepare_command", "write verl's multimodal parquet from a training manifest"),
    "train": ("cim.train.commands", "GRPO with the CIM reward: --backend verl (GPU) or local (CPU)"),
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, the syntax of `dvc exp run -S` (e.g. reward.beta=0.5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            top.print_usage(sys.stderr)
            print(f"cim: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        top.print_help()
        return 0
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"cim {name}", description=help_text)
    _add_common(parser)
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
