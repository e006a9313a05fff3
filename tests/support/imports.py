"""Which of some modules a fresh interpreter has imported after running a statement (import-weight tests)."""
from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip())
