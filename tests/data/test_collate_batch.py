"""Collation into SAM 2's time-major BatchedVideo."""

from __future__ import annotations

import torch

from sam2_core.data.loader.collate import VideoSample, collate_videos, video_number


def _sample(vid: str, num_obj: int, t: int = 3, res: int = 8) -> VideoSample:
    return VideoSample(
        images=torch.randn(t, 3, res, res),
        masks=torch.rand(t, num_obj, res, res) > 0.5,
        obj_ids=list(range(10, 10 + num_obj)),
        frame_indices=[4 * i for i in range(t)],
        video_id=vid,
        orig_size=(720, 1280),
    )


def test_shapes_dtypes_and_indices() -> None:
    a, b = _sample("a", 2), _sample("b", 3)
    batch = collate_videos([a, b])
    assert batch.img_batch.shape == (3, 2, 3, 8, 8) and batch.img_batch.dtype == torch.float32
    assert batch.masks.shape == (3, 5, 8, 8) and batch.masks.dtype == torch.bool
    assert batch.obj_to_frame_idx.shape == (3, 5, 2) and batch.obj_to_frame_idx.dtype == torch.int32
    assert batch.unique_objects_identifier.shape == (3, 5, 3)
    assert batch.unique_objects_identifier.dtype == torch.int64
    assert batch.frame_orig_size.shape == (3, 5, 2)
    assert batch.num_frames == 3 and batch.num_videos == 2
    assert batch.obj_to_frame_idx[:, :, 1].tolist() == [[0, 0, 1, 1, 1]] * 3
    assert batch.obj_to_frame_idx[:, 0, 0].tolist() == [0, 1, 2]
    assert batch.unique_objects_identifier[1, 3].tolist() == [video_number("b"), 11, 4]
    assert batch.frame_orig_size[0, 0].tolist() == [720, 1280]
    torch.testing.assert_close(batch.img_batch[:, 1], b.images)
    assert torch.equal(batch.masks[:, 2:], b.masks)
    flat = batch.flat_img_batch
    assert flat.shape == (6, 3, 8, 8)
    torch.testing.assert_close(flat[3 + 1], b.images[1])  # video-major
    idx = batch.flat_obj_to_img_idx
    assert idx.shape == (3, 5) and idx[2, 4].item() == 1 * 3 + 2
    torch.testing.assert_close(flat[idx[2, 4]], b.images[2])
    moved = batch.to("cpu")
    assert torch.equal(moved.masks, batch.masks) and moved.video_ids == ["a", "b"]


def test_single_clip_is_a_view() -> None:
    a = _sample("a", 1)
    batch = collate_videos([a])
    assert batch.img_batch.data_ptr() == a.images.data_ptr()
    assert batch.img_batch.shape == (3, 1, 3, 8, 8)
