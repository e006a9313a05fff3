"""Quiet by default: third-party loading bars and tool chatter stay off the console (our own progress bars
stay, on stderr). ``cim --debug`` / ``CIM_DEBUG=1`` or ``CIM_VERBOSE=1`` lets them through.

:func:`third_party` sets the libraries' own switches (Hugging Face Hub and transformers bars, transformers'
advisories) before they are imported; :func:`captured_stderr` silences what a child process writes to the
shared stderr (pycocoevalcap's Java ``PTBTokenizer tokenized ... tokens per second``), showing it only when
the wrapped call fails.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

__all__ = ["third_party", "captured_stderr", "verbose"]


def verbose() -> bool:
    return any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no")
               for k in ("CIM_VERBOSE", "CIM_DEBUG"))


def third_party(loud: bool = False) -> None:
    """Turn third-party progress bars and advisories off for this process and its children (a value the
    user set wins)."""
    if loud or verbose():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")     # hub downloads and transformers' "Loading weights"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and "transformers" in sys.modules:   # read at import:
        from transformers.utils import logging as hf_logging                                  # already too late

        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def captured_stderr() -> Iterator[None]:
    """File descriptor 2 goes to a temporary file inside the block (a child process's chatter included); on
    an exception what was captured is written out, so a failure still shows its cause."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
