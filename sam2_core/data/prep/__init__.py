"""Offline data preparation: frame extraction, Parquet shard writing (in one pass, or per
deterministic partition plus a commit), demo and synthetic data."""
