"""Bitwise-reproducible stages: seeds, deterministic torch kernels and a fixed thread count in one place.

>>> with deterministic(seed=0, threads=2):
...     train()

- Python's ``random``, NumPy's global generator and torch's (CPU and CUDA) are seeded with ``seed``.
- ``torch.use_deterministic_algorithms(True)``: an op without a deterministic kernel raises instead of
  silently varying; cuDNN autotuning is off (``CUBLAS_WORKSPACE_CONFIG`` is set for deterministic cuBLAS).
- ``threads`` fixes torch's intra-op thread count, so a run does not depend on the machine's core count.

On exit the previous deterministic-mode and thread settings are restored (the RNGs stay seeded), so a
library caller -- a test session, a Prefect worker -- is not left in another mode.

CPU kernels: MKL, oneDNN and ATen pick their kernels by the CPU's instruction set, and the float results
differ in the last bits between those kernels (measured: MiniLM and EfficientNet-Lite0 embeddings differ by
~1e-7 between the AVX-512 and AVX2 kernels of one machine; the local captioner's SFT, 400 steps of it, turns
such differences into other captions -- object recall 0.555 vs 0.568 on the demo world). So
:func:`pin_cpu_kernels` (called when ``cim`` is imported, before torch loads) selects the AVX2 kernels on
every x86 CPU: ``MKL_CBWR=AVX2`` (MKL's conditional numerical reproducibility), ``ONEDNN_MAX_CPU_ISA=AVX2``,
``ATEN_CPU_CAPABILITY=avx2``. A value already in the environment wins (set e.g. ``ATEN_CPU_CAPABILITY=
avx512`` to trade reproducibility across CPUs for speed); they only apply to a process that had not yet
loaded torch when ``cim`` was imported.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator, Optional

__all__ = ["deterministic", "pin_cpu_kernels", "CPU_KERNEL_ENV"]

CPU_KERNEL_ENV = {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def pin_cpu_kernels() -> None:
    """The same CPU kernels on every x86 machine with AVX2 (environment values already set win)."""
    for key, value in CPU_KERNEL_ENV.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def deterministic(seed: int, threads: Optional[int] = None) -> Iterator[None]:
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
