"""Offline data preparation: frame extraction, Parquet shard writing, demo and synthetic data."""
