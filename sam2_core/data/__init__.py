"""Data, split by where it runs.

- :mod:`.readers`: every dataset format read as typed :class:`~.readers.records.VideoRecord`
  (SA-V raw and frame layouts, DAVIS/MOSE, SA-1B, Parquet shards), RLE and file helpers, PyAV
  video access. Used by everything below and by evaluation.
- :mod:`.prep`: offline preparation steps: frame extraction, the shard writer, demo and
  synthetic data; data partitions (:mod:`.prep.partitions`) and the commit that merges
  partitioned shard writes (:mod:`.prep.shard_commit`).
- :mod:`.loader`: the training loader (one :class:`~.loader.config.LoaderConfig`): sources,
  rank/worker partition, stream, buffers, sampler, transforms, collate.

Imports run ``prep -> readers`` and ``loader -> readers``; readers import neither.
"""
