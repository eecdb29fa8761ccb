"""Data: readers for SA-V / DAVIS / MOSE / SA-1B, frame extraction, Parquet shards, loaders."""

from sam2_core.data.records import (
    ArrayMask,
    DataError,
    LazyMask,
    RleMask,
    VideoObject,
    VideoRecord,
)

__all__ = ["ArrayMask", "DataError", "LazyMask", "RleMask", "VideoObject", "VideoRecord"]
