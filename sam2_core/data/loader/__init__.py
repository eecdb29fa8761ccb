"""The training loader: clips from Parquet shards or raw datasets, split over ranks and workers."""
