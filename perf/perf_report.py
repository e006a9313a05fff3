"""What every measurement script here shares: the machine's load, and printing / writing its one JSON."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def uptime() -> str:
    """`uptime`'s line (load averages), or the load averages alone where there is no `uptime`."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def emit(result: dict, out: str | None) -> None:
    """Print ``result`` as indented JSON; also write it to ``out`` when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
