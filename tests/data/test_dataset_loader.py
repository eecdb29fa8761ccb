"""Training loader over real Parquet shards: rank x worker partition, shuffling, resume, mixing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam2_core.data.loader.config import LoaderConfig, SourceConfig
from sam2_core.data.loader.partition import mix_order, rank_batches, worker_batches
from sam2_core.data.loader.train_loader import build_train_loader
from sam2_core.data.prep.shard_writer import write_shards
from sam2_core.data.prep.synthetic import make_records
from sam2_core.data.readers.records import VideoRecord


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    recs = make_records(num_videos=9, num_frames=6, height=36, width=48, seed=2)
    short = make_records(num_videos=1, num_frames=2, height=36, width=48, prefix="short")
    dst = str(tmp_path_factory.mktemp("shards") / "s")
    write_shards(src=recs + short, dst=dst, row_group_mb=0.01, val_fraction=0.0)
    return dst


def _cfg(url: str, **kw: object) -> LoaderConfig:
    base: dict[str, object] = dict(
        shards=url, resolution=32, num_frames=3, batch_size=2, num_workers=0, max_num_objects=2
    )
    base.update(kw)
    return LoaderConfig(**base)  # type: ignore[arg-type]


def _sig(batch) -> tuple:
    return (
        tuple(batch.video_ids),
        tuple(batch.unique_objects_identifier[:, :, 2].flatten().tolist()),
        round(float(batch.img_batch.double().sum()), 3),
        int(batch.masks.sum()),
    )


def test_rank_and_worker_partition_without_overlap() -> None:
    n, ws, bs = 23, 3, 2
    per_rank = [
        rank_batches(n, batch_size=bs, rank=r, world_size=ws, seed=5, epoch=1) for r in range(ws)
    ]
    assert len({len(b) for b in per_rank}) == 1, "every rank runs the same number of steps"
    positions = [p for b in per_rank for batch in b for p, _ in batch]
    assert len(positions) == len(set(positions)), "no epoch position is used twice"
    items = {i for b in per_rank for batch in b for _, i in batch}
    assert len(items) >= n - ws * bs  # only the dropped tail may be missing
    batches = per_rank[0]
    for start in (0, 1, 3):
        got = [
            k
            for w in range(3)
            for k, _ in worker_batches(batches, start=start, worker=w, num_workers=3)
        ]
        assert sorted(got) == list(range(start, len(batches)))


def test_loader_ranks_disjoint_and_short_video_skipped(shards: str) -> None:
    seen: list[str] = []
    lengths = []
    for rank in range(2):
        ld = build_train_loader(_cfg(shards, batch_size=1), rank=rank, world_size=2, seed=0)
        lengths.append(len(ld))
        assert ld.loaders[0].skipped == {"short": 1}
        for b in ld:
            assert b.img_batch.shape == (3, 1, 3, 32, 32)
            assert b.masks.dtype == torch.bool and b.masks.shape[0] == 3
            seen += b.video_ids
    assert lengths == [5, 5]  # 9 usable videos padded to 10
    assert "short_0000" not in seen
    assert len(set(seen)) == 9


def test_shuffle_is_deterministic_per_seed_and_epoch(shards: str) -> None:
    def run(seed: int, epoch: int) -> list[tuple]:
        ld = build_train_loader(_cfg(shards), rank=0, world_size=1, seed=seed, epoch=epoch)
        return [_sig(b) for b in ld]

    a = run(0, 0)
    assert a == run(0, 0)
    assert [s[0] for s in a] != [s[0] for s in run(0, 1)]
    assert a != run(1, 0)


def test_mid_epoch_resume_with_workers_matches_uninterrupted(shards: str) -> None:
    full = [_sig(b) for b in build_train_loader(_cfg(shards), rank=0, world_size=1, seed=3)]
    ld = build_train_loader(_cfg(shards), rank=0, world_size=1, seed=3)
    it = iter(ld)
    head = [_sig(next(it)) for _ in range(2)]
    state = ld.state_dict()
    assert state["position"] == 2 and state["epoch"] == 0
    resumed = build_train_loader(_cfg(shards, num_workers=2), rank=0, world_size=1, seed=0)
    resumed.load_state_dict(state)
    tail = [_sig(b) for b in resumed]
    assert head + tail == full
    assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["position"] == 0


def test_mixed_sources_follow_a_rank_independent_order(shards: str, tmp_path: Path) -> None:
    images: list[VideoRecord] = make_records(
        num_videos=5, num_frames=1, height=30, width=40, seed=9, prefix="img"
    )
    img_dir = str(tmp_path / "img")
    write_shards(src=images, dst=img_dir, val_fraction=0.0)
    cfg = _cfg(
        shards,
        sources=[
            SourceConfig(name="video", shards=shards, batch_size=1, num_frames=3),
            SourceConfig(name="image", shards=img_dir, batch_size=2, num_frames=1),
        ],
    )
    keys = []
    for rank in range(2):
        ld = build_train_loader(cfg, rank=rank, world_size=2, seed=4)
        batches = list(ld)
        keys.append([b.dict_key for b in batches])
        for b in batches:
            if b.dict_key == "image":
                assert b.img_batch.shape[:2] == (1, 2)
            else:
                assert b.img_batch.shape[:2] == (3, 1)
    assert keys[0] == keys[1]
    assert keys[0].count("video") == 5 and keys[0].count("image") == 1
    assert mix_order([2, 3], seed=1, epoch=0) == mix_order([2, 3], seed=1, epoch=0)


def test_gcs_shards_with_forked_workers(gcs_url: str) -> None:
    recs = make_records(num_videos=4, num_frames=4, height=24, width=32, seed=3)
    dst = f"{gcs_url}/s"
    write_shards(src=recs, dst=dst, row_group_mb=0.005, val_fraction=0.0)
    local = [_sig(b) for b in build_train_loader(_cfg(dst), rank=0, world_size=1, seed=1)]
    forked = [
        _sig(b) for b in build_train_loader(_cfg(dst, num_workers=2), rank=0, world_size=1, seed=1)
    ]
    assert forked == local and len(local) == 2


def test_raw_frame_folder_source(tmp_path: Path) -> None:
    from sam2_core.data.prep.synthetic import write_frame_folders

    recs = make_records(num_videos=2, num_frames=4, height=24, width=32, seed=4)
    write_frame_folders(recs, str(tmp_path / "frames"))
    ld = build_train_loader(
        LoaderConfig(raw=str(tmp_path / "frames"), resolution=32, num_frames=3, num_workers=0),
        rank=0,
        world_size=1,
        seed=0,
    )
    out = list(ld)
    assert len(out) == 2 and sorted(v for b in out for v in b.video_ids) == ["vid_0000", "vid_0001"]


def test_buffer_pool_reuses_only_unreferenced_buffers() -> None:
    from sam2_core.data.loader.buffers import BufferPool

    pool = BufferPool(per_shape=2)
    a = pool.get((2, 3), torch.float32)
    a.fill_(1.0)
    view = a[0]
    del a
    b = pool.get((2, 3), torch.float32)  # `view` still holds the first buffer: a new one
    assert b.data_ptr() != view.data_ptr()
    ptr = view.data_ptr()
    del view
    c = pool.get((2, 3), torch.float32)  # nothing references the first buffer any more
    assert c.data_ptr() == ptr and pool.reused == 1
    assert c.data_ptr() != b.data_ptr()
    assert pool.get((2, 4), torch.bool).shape == (2, 4)


def test_read_ahead_predicts_every_read_and_changes_no_output(shards: str) -> None:
    loader = build_train_loader(_cfg(shards), rank=0, world_size=1, seed=4)
    src = loader.loaders[0]
    stream = src.stream(0, 0, 4)
    assert stream.source.prefetch
    direct = [_sig(stream.make_batch(b)) for b in stream.batches]  # no read-ahead
    reads: list[tuple] = []
    real_read = stream.source.read

    def counting_read(video, positions, obj_ids):  # type: ignore[no-untyped-def]
        reads.append((video, tuple(positions), tuple(obj_ids)))
        return real_read(video, positions, obj_ids)

    stream.source.read = counting_read  # type: ignore[method-assign]
    try:
        it = iter(stream)
        first = _sig(next(it))
        ahead = stream._ahead
        assert ahead is not None and ahead.pending >= 1, "the next batch is already being read"
        got = [first] + [_sig(b) for b in it]
    finally:
        del stream.source.read
    assert got == direct
    assert len(reads) == len(set(reads)) == sum(len(b) for b in stream.batches)
    assert stream._ahead is None  # the thread is shut down with the iterator


def test_undecodable_jpeg_in_a_shard_is_substituted_with_a_named_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame that fails to decode on the read-ahead decode thread surfaces where the clip is
    made: the clip is replaced by another video's, with a warning naming the video and frame."""
    import dataclasses

    recs = make_records(num_videos=3, num_frames=4, height=36, width=48, seed=3)
    bad = recs[1]
    recs[1] = dataclasses.replace(bad, load_image_bytes=lambda fi: b"\xff\xd8 not a jpeg")
    dst = str(tmp_path / "s")
    write_shards(src=recs, dst=dst, row_group_mb=0.01, val_fraction=0.0)
    loader = build_train_loader(_cfg(dst, batch_size=1, num_frames=2), rank=0, world_size=1, seed=0)
    stream = loader.loaders[0].stream(0, 0, 0)
    with caplog.at_level("WARNING"):
        batches = list(stream)
    assert len(batches) == 3
    assert bad.video_id not in {v for b in batches for v in b.video_ids}
    assert stream.counters["substituted"] >= 1
    assert any(
        bad.video_id in r.getMessage()
        and "cannot decode image" in r.getMessage()
        and "frame" in r.getMessage()
        for r in caplog.records
    )
