"""`cim <command>`: every DVC stage and flow step is one command.

Each command is a module of this package exposing ``add_arguments(parser)`` and ``run(args) -> int``: it
parses arguments and calls one function of :mod:`cim.stages` (the same function the Prefect flows call),
then prints. This file only lists them, so ``cim --help`` stays fast (modules are imported when their command
runs, and nothing they import at parse time loads torch, transformers, faiss or mlflow).

Errors a person can fix (:func:`cim.errors.user_message`: every ``CimError``, a missing input file, a file
that is not UTF-8, JSON or YAML) are printed here, once for all commands, as ``cim <command>: <message>``
with the error's exit code and no traceback; ``--debug`` or ``CIM_DEBUG=1`` prints the traceback too. Exit
codes: 0 done, 1 a bug (the traceback), 2 the user's error, 3 a training sentinel stopped the run
(:class:`cim.errors.SentinelTripped`, ``train.sentinels.on_trip: stop``), 130 interrupted. A ``CimError``
subclass names its own code in ``exit_code``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

DEFAULT_PARAMS = "params.yaml"
EXIT_USER_ERROR = 2          # every CimError's unless its class says otherwise (CimError.exit_code)
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
    "ablate": ("cim.cli.ablate", "the paper's ablations of the reward: components, scale, encoders, beta; aggregate"),
    "caption": ("cim.cli.caption", "caption a benchmark with a trained, released or any registered captioner "
                "(captions.jsonl)"),
    "compare": ("cim.cli.compare", "the captioners' table (CAPTURE, F1s, Relations QA, BLEU/METEOR, CIM, ground-truth "
                "recall): means over seeds, 95%% intervals, deltas vs a baseline"),
    "publish": ("cim.cli.publish", "put the captioners' comparison into MLflow when the store lacks it (after any run)"),
}


# ---------------------------------------------------------------------------------------------------- options
# One flag per concept, for every command: the spelling, and the old spellings kept for one release as hidden
# aliases (argparse.SUPPRESS help) that still work and print a one-line deprecation note on stderr.
FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "out": ("--out", ("--out-dir", "--output")),   # what the command writes (a folder or a file)
    "index": ("--index", ("--index-dir",)),        # the corpus index folder read
    "manifest": ("--manifest", ()),                # the corpus / training manifest read
    "captions": ("--captions", ("--input",)),      # captions read (jsonl)
    "benchmark": ("--benchmark", ()),              # configs/benchmarks/NAME.yaml
}

# Where a command run by hand writes when it would otherwise write into the pipeline's own report folders
# (the committed ones, which the DVC stages name with --out): runs/<command>/ (ignored by git).
INTERACTIVE_DIR = "runs"


class _Deprecated(argparse.Action):
    """An old spelling: stores (or appends) like the flag it stands for, with a note on stderr."""

    def __init__(self, option_strings, dest, *, new: str, append: bool = False, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.append = new, append

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is deprecated and goes in the next release; use {self.new}",
              file=sys.stderr)
        if self.append:
            values = list(getattr(namespace, self.dest, None) or []) + [values]
        setattr(namespace, self.dest, values)


def add_flag(parser: argparse.ArgumentParser, concept: str, **kwargs) -> argparse.Action:
    """Add ``concept``'s flag (:data:`FLAGS`) with ``kwargs`` (help, default, dest, metavar, action ...) and
    its old spellings as hidden aliases of it."""
    flag, old = FLAGS[concept]
    required = bool(old) and kwargs.pop("required", False)   # an old spelling satisfies it too: checked by parse()
    action = parser.add_argument(flag, **kwargs)
    if required:
        parser.set_defaults(required_flags=[*(parser.get_default("required_flags") or []), (flag, action.dest)])
    for spelling in old:
        parser.add_argument(spelling, dest=action.dest, action=_Deprecated, new=flag, help=argparse.SUPPRESS,
                            append=kwargs.get("action") == "append", metavar=action.metavar)
    return action


def add_out(parser: argparse.ArgumentParser, help: str, *, key: str | None = None, **kwargs) -> argparse.Action:
    """``--out``. With ``key`` (the config key of the folder the pipeline writes, e.g. ``pipeline.out_dir``), a
    command run without ``--out`` that would write into that committed folder writes under
    ``runs/<command>/`` instead (:func:`settle_out`); the DVC stages name their folder with ``--out``."""
    if key:
        parser.set_defaults(out_key=key)
    return add_flag(parser, "out", help=help, **kwargs)


def _no_mlflow(parser) -> None:
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _no_progress(parser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _protocol(parser) -> None:
    from cim.protocols import names

    parser.add_argument("--protocol", default=None, metavar="NAME",
                        help="a named protocol, configs/protocols/NAME.yaml: " + ", ".join(names())
                        + " (the same as the override protocol=NAME; later overrides still win)")


# the shared options a command opts into, each declared once here: add_shared(parser, "protocol", "no-mlflow")
SHARED = {"protocol": _protocol, "no-mlflow": _no_mlflow, "no-progress": _no_progress}


def add_shared(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared options ``names`` (keys of :data:`SHARED`) to a command, in one group."""
    group = parser.add_argument_group("shared options")
    for name in names:
        SHARED[name](group)


def add_common(parser: argparse.ArgumentParser) -> None:
    """The options every command has (added by :func:`run_command`): ``--params``, ``--debug`` and the
    trailing ``key=value`` overrides."""
    group = parser.add_argument_group("common options")
    group.add_argument("--params", default=None,
                       help=f"params file (default: {DEFAULT_PARAMS} in the working folder; where there is none, "
                            "the built-in defaults, with a note)")
    group.add_argument("--debug", action="store_true",
                       help="on an error, print the traceback too (or set CIM_DEBUG=1)")
    group.add_argument("overrides", nargs="*", metavar="key=value",
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
        from cim.errors import CimError, user_message

        message = user_message(exc)
        if message is None:
            raise
        if debug_enabled(argv):
            traceback.print_exc()
        print(f"cim {name}: {message}", file=sys.stderr)
        return int(exc.exit_code) if isinstance(exc, CimError) else EXIT_USER_ERROR


def run_command(name: str, argv: list[str]) -> int:
    """Parse ``argv`` for command ``name``, settle the params file, run the command; errors propagate."""
    from cim.quiet import third_party

    third_party(loud=debug_enabled(argv))     # before any library loads: no third-party bars or chatter
    module, parser = command_parser(name)
    args = parse(parser, argv)
    if hasattr(module, "check_arguments"):      # a command's own argument errors, before the overrides' checks
        module.check_arguments(args)
    args.params = settle_params(name, args.params, args.overrides)
    note = settle_out(name, args)
    code = int(module.run(args) or 0)
    if note:                                   # after the work: an error stays one line
        print(note, file=sys.stderr)
    return code


def command_parser(name: str):
    """Command ``name``'s module and its parser: the command's own options, then :func:`add_common`."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"cim {name}", description=help_text.replace("%%", "%"))
    module.add_arguments(parser)       # first: a command's own positional (`cim ablate AXIS`) precedes the overrides
    add_common(parser)
    return module, parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed (options and the trailing overrides intermixed); a required flag given by neither its
    spelling nor an old one is argparse's usual error (exit 2)."""
    args = parser.parse_intermixed_args(argv)
    missing = [flag for flag, dest in getattr(args, "required_flags", None) or [] if getattr(args, dest) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return args


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
    """``--protocol NAME`` (kept for callers of the old helper: :func:`add_shared` ``"protocol"``)."""
    add_shared(parser, "protocol")


def settle_out(name: str, args: argparse.Namespace) -> str | None:
    """Keep a command run by hand out of the pipeline's committed report folders: when the command declared an
    out key (:func:`add_out`), ``--out`` is not given, no ``key=value`` override names the key and the params
    file leaves it at its built-in default (the folder a DVC stage writes, naming it with ``--out``), the
    command writes under ``runs/<name>/`` instead: the key is overridden (the override goes last), with a
    note on stderr. A flow calls the stages, not this, and sets its own folders."""
    key = getattr(args, "out_key", None)
    if not key or getattr(args, "out", None) is not None or any(o.split("=", 1)[0].strip() == key
                                                                 for o in overrides_of(args)):
        return
    from cim.config import load_config

    pipeline_folder = _get(load_config(None, []), key)
    if str(_get(load(args), key)) != str(pipeline_folder):
        return                                        # the params file names another folder: the user's
    folder = f"{INTERACTIVE_DIR}/{name}"
    args.overrides = list(args.overrides or []) + [f"{key}={folder}"]
    return (f"cim {name}: note: wrote under {folder}/ ({pipeline_folder}/ is the pipeline's; name it with --out "
            f"to write there)")


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def overrides_of(args: argparse.Namespace, *extra: str) -> list[str]:
    """The command's overrides: ``--protocol`` first (explicit overrides still win), then the trailing
    ``key=value`` ones, then ``extra`` (what the command's own options set)."""
    from cim.protocols import with_protocol

    return with_protocol(getattr(args, "protocol", None), args.overrides) + list(extra)


def load(args: argparse.Namespace, *extra: str):
    """The command's config: its params file with :func:`overrides_of` applied."""
    from cim.config import load_config

    return load_config(args.params, overrides_of(args, *extra))


if __name__ == "__main__":
    sys.exit(main())
