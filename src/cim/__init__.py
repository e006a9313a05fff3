"""CIM: Cross-modal Identity Mapping, a retrieval-based caption reward for RL (arXiv 2603.01696)."""
__version__ = "0.1.0"

from cim.determinism import pin_cpu_kernels as _pin_cpu_kernels

_pin_cpu_kernels()        # before torch loads: the same CPU kernels (and float results) on every machine
