"""Training with the CIM reward: verl on GPU clusters (parquet, overrides, launcher, reward function) and a
small local GRPO backend for CPU. Submodules are imported on use (verl and torch are heavy)."""
