"""DataLoader workers reuse a ring of shared-memory output buffers that the consuming process
hands back once nothing references a batch any more; a batch that is still held is never
written again."""

from __future__ import annotations

import gc

import pytest
import torch

from sam2_core.data.loader.buffers import (
    SharedRing,
    release_batches_when_unused,
    storage_handle,
)
from sam2_core.data.loader.collate import BatchedVideo
from sam2_core.data.loader.config import LoaderConfig
from sam2_core.data.loader.train_loader import build_train_loader
from sam2_core.data.prep.shard_writer import write_shards
from sam2_core.data.prep.synthetic import make_records


def _batch(ring: SharedRing, *, received: bool = False) -> BatchedVideo:
    """A batch built on ring buffers; ``received``: as the consuming process sees it (its own
    mapping of the shared memory, here a copy), so the ring's references do not count."""
    img = ring.get((2, 1, 3, 4, 4), torch.float32)
    masks = ring.get((2, 1, 4, 4), torch.bool)
    if received:
        img, masks = img.clone(), masks.clone()
    b = BatchedVideo(
        img_batch=img,
        masks=masks,
        obj_to_frame_idx=torch.zeros(2, 1, 2, dtype=torch.int32),
        unique_objects_identifier=torch.zeros(2, 1, 3, dtype=torch.long),
        frame_orig_size=torch.zeros(2, 1, 2, dtype=torch.long),
    )
    b.buffer_tokens = ring.take_tokens()
    return b


def test_ring_reuses_a_slot_only_after_release_and_never_blocks() -> None:
    ring = SharedRing(per_shape=2, max_shapes=4)
    a, b = _batch(ring), _batch(ring)
    c = _batch(ring)  # both slots of each shape in use: one-off buffers, no tokens
    assert c.buffer_tokens is None
    assert a.img_batch.data_ptr() != b.img_batch.data_ptr() != c.img_batch.data_ptr()
    a_ptr = a.img_batch.data_ptr()
    assert a.buffer_tokens is not None
    a.buffer_tokens.release()
    d = _batch(ring)
    assert d.img_batch.data_ptr() == a_ptr and ring.reused == 2  # images and masks


def test_consumer_releases_only_batches_nobody_uses() -> None:
    ring = SharedRing(per_shape=3, max_shapes=4)
    made = [_batch(ring, received=True) for _ in range(3)]

    def arriving():  # like a DataLoader: holds no batch once it is handed over
        while made:
            yield made.pop(0)

    it = release_batches_when_unused(arriving())
    first = next(it)
    kept_view = first.img_batch[0]  # a view keeps the first batch's buffer in use
    del first
    gc.collect()
    second = next(it)  # the check runs here: the first batch is still viewed
    assert ring.flags.tolist()[:4] == [1, 1, 1, 1]
    del kept_view, second
    gc.collect()
    third = next(it)  # now the first two batches are unused
    assert ring.flags.tolist()[:6] == [0, 0, 0, 0, 1, 1]
    assert third.buffer_tokens is None  # the loader keeps the tokens, not the batch


def test_storage_handle_is_not_a_view() -> None:
    t = torch.zeros(4).share_memory_()
    h = storage_handle(t)
    assert h._base is None and h.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    recs = make_records(num_videos=12, num_frames=6, height=36, width=48, seed=5)
    dst = str(tmp_path_factory.mktemp("ring") / "s")
    write_shards(src=recs, dst=dst, row_group_mb=0.01, val_fraction=0.0)
    return dst


def _cfg(url: str, workers: int) -> LoaderConfig:
    return LoaderConfig(
        shards=url, resolution=32, num_frames=3, batch_size=1, num_workers=workers,
        max_num_objects=2,
    )  # fmt: skip


@pytest.mark.integration
def test_worker_batches_equal_in_process_and_held_batches_stay_intact(shards: str) -> None:
    """Batches kept by the consumer (a list of all of them) are never overwritten by reuse,
    and batches dropped one by one come out identical to the in-process loader's."""
    ref = [
        (b.img_batch.clone(), b.masks.clone())
        for b in build_train_loader(_cfg(shards, 0), rank=0, world_size=1, seed=3)
    ]
    kept = list(build_train_loader(_cfg(shards, 1), rank=0, world_size=1, seed=3))
    assert len(kept) == len(ref) == 12
    for b, (img, masks) in zip(kept, ref):
        assert torch.equal(b.img_batch, img) and torch.equal(b.masks, masks)
    streamed = []
    for b in build_train_loader(_cfg(shards, 1), rank=0, world_size=1, seed=3):
        streamed.append((b.img_batch.clone(), b.masks.clone()))
        del b
    for (img, masks), (rimg, rmasks) in zip(streamed, ref):
        assert torch.equal(img, rimg) and torch.equal(masks, rmasks)
