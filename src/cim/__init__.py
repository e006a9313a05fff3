"""CIM: Cross-modal Identity Mapping, a retrieval-based caption reward for RL (arXiv 2603.01696)."""
__version__ = "0.1.0"
