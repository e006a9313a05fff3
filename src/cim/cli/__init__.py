"""`cim <command>`: every DVC stage and flow step is one command.

Each command is a module of this package exposing ``add_arguments(parser)`` and ``run(args) -> int``: it
parses arguments and calls one function of :mod:`cim.stages` (the same function the Prefect flows call),
then prints. This file only lists them, so ``cim --help`` stays fast (modules are imported when their command
runs, and nothing they import at parse time loads torch, transformers, faiss or mlflow).

Errors a person can fix (:func:`cim.errors.user_message`: every ``CimError``, a missing input file, a file
that is not UTF-8, JSON or YAML) are printed here, once for all commands, as ``cim <command>: <message>``
with exit code 2 and no traceback; ``--debug`` or ``CIM_DEBUG=1`` prints the traceback too.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

DEFAULT_PARAMS = "params.yaml"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# name -> (its module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("cim.cli.prepare", "generate the demo world (corpus, training and benchmark images)"),
    "manifest": ("cim.cli.manifest", "write a corpus manifest from a dataset's release format"),
    "index": ("cim.cli.index", "embed a corpus manifest in resumable shards and build the search index"),
    "score": ("cim.cli.score", "score captions with the CIM reward (jsonl in, jsonl out)"),
    "verify": ("cim.cli.verify", "check that the reward tracks caption quality on the demo world"),
    "audit": ("cim.cli.audit", "does the reward carry signal on this corpus? detail, precision and hacks per "
              "component, no labels"),
    "evaluate": ("cim.cli.evaluate", "score captions on the declared benchmarks: CAPTURE, fine-grained, Relations QA, "
                 "BLEU/METEOR, CIM"),
    "serve": ("cim.cli.serve", "run the reward service (HTTP, dynamic batching)"),
    "prepare-train": ("cim.cli.prepare_train", "write verl's multimodal parquet from a training manifest"),
    "train": ("cim.cli.train", "GRPO with the CIM reward: --backend verl (GPU) or local (CPU)"),
    "ablate": ("cim.cli.ablate", "the paper's ablations of the reward: components, scale, encoders, beta"),
    "caption": ("cim.cli.caption", "caption a benchmark with a trained, released or any registered captioner "
                "(captions.jsonl)"),
    "compare": ("cim.cli.compare", "the captioners' table (CAPTURE, F1s, Relations QA, BLEU/METEOR, CIM, ground-truth "
                "recall): means over seeds, 95%% intervals, deltas vs a baseline"),
    "publish": ("cim.cli.publish", "put the captioners' comparison into MLflow when the store lacks it (after any run)"),
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=None,
                        help=f"params file (default: {DEFAULT_PARAMS} in the working folder; where there is none, "
                             "the built-in defaults, with a note)")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the traceback too (or set CIM_DEBUG=1)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, the syntax of `dvc exp run -S` (e.g. reward.beta=0.5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def debug_enabled(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CIM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            top.print_usage(sys.stderr)
            print(f"cim: unknown command {argv[0]!r}", file=sys.stderr)
            return EXIT_USER_ERROR
        top.print_help()
        return 0
    name = argv[0]
    try:
        return run_command(name, argv[1:])
    except KeyboardInterrupt:
        if debug_enabled(argv):
            traceback.print_exc()
        print(f"cim {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (the boundary: a user's error becomes one line, a bug re-raises)
        from cim.errors import user_message

        message = user_message(exc)
        if message is None:
            raise
        if debug_enabled(argv):
            traceback.print_exc()
        print(f"cim {name}: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


def run_command(name: str, argv: list[str]) -> int:
    """Parse ``argv`` for command ``name``, settle the params file, run the command; errors propagate."""
    from cim.quiet import third_party

    third_party(loud=debug_enabled(argv))     # before any library loads: no third-party bars or chatter
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"cim {name}", description=help_text.replace("%%", "%"))
    module.add_arguments(parser)       # first: a command's own positional (`cim ablate AXIS`) precedes the overrides
    _add_common(parser)
    args = parser.parse_intermixed_args(argv)
    if hasattr(module, "check_arguments"):      # a command's own argument errors, before the overrides' checks
        module.check_arguments(args)
    args.params = settle_params(name, args.params, args.overrides)
    return int(module.run(args) or 0)


def settle_params(name: str, params: str | None, overrides: list[str]) -> str | None:
    """The params file the command reads: ``--params`` if given (it must exist), else params.yaml in the
    working folder, else ``None`` (the built-in defaults, said in one line on stderr). The file and the
    overrides are checked here, before the command does any work, so every command fails the same way."""
    from cim.config import load_config

    if params is None:
        if Path(DEFAULT_PARAMS).exists():
            params = DEFAULT_PARAMS
        else:
            print(f"cim {name}: note: no {DEFAULT_PARAMS} in {Path.cwd()}; using the built-in defaults "
                  "(pass --params FILE to use another file)", file=sys.stderr)
    load_config(params, overrides)
    return params


def add_protocol_argument(parser: argparse.ArgumentParser) -> None:
    """``--protocol NAME`` on a command (the same as the override ``protocol=NAME``)."""
    from cim.protocols import names

    parser.add_argument("--protocol", default=None, metavar="NAME",
                        help="a named protocol, configs/protocols/NAME.yaml: " + ", ".join(names())
                        + " (the same as the override protocol=NAME; later overrides still win)")


def overrides_of(args: argparse.Namespace, *extra: str) -> list[str]:
    """The command's overrides: ``--protocol`` first (explicit overrides still win), then the trailing
    ``key=value`` ones, then ``extra`` (what the command's own options set)."""
    name = getattr(args, "protocol", None)
    return ([f"protocol={name}"] if name else []) + list(args.overrides or []) + list(extra)


def load(args: argparse.Namespace, *extra: str):
    """The command's config: its params file with :func:`overrides_of` applied."""
    from cim.config import load_config

    return load_config(args.params, overrides_of(args, *extra))


if __name__ == "__main__":
    sys.exit(main())
