"""Instance-unique querying: queue, uniqueness loss, equivariance transform and loss."""

from __future__ import annotations

import torch

from sam2_core.train.iuq import (
    EquivarianceConfig,
    PixelQueue,
    UniquenessConfig,
    equivariance_loss,
    random_geo_transform,
    sample_foreground_pixels,
    soft_consistency_loss,
    uniqueness_loss,
)


def test_queue_wraps_around_and_keeps_fixed_memory() -> None:
    q = PixelQueue(size=5, dim=2)
    ptr0 = q.embeddings.data_ptr()
    q.enqueue(torch.arange(6.0).reshape(3, 2), torch.tensor([1, 1, 1]))
    q.enqueue(torch.arange(6.0, 14.0).reshape(4, 2), torch.tensor([2, 2, 2, 3]))
    assert q.count == 5 and q.ptr == 2
    assert q.embeddings.data_ptr() == ptr0 and q.embeddings.shape == (5, 2)
    # oldest two entries (rows 0, 1 of the first batch) were overwritten by the newest two
    assert q.video_ids.tolist() == [2, 3, 1, 2, 2]
    assert q.embeddings[0].tolist() == [10.0, 11.0]


def test_queue_larger_batch_than_capacity_keeps_newest() -> None:
    q = PixelQueue(size=3, dim=1)
    q.enqueue(torch.arange(7.0).reshape(7, 1), torch.arange(7))
    assert sorted(q.video_ids.tolist()) == [4, 5, 6]


def test_sampling_excludes_own_video() -> None:
    q = PixelQueue(size=10, dim=3)
    q.enqueue(torch.ones(4, 3), torch.tensor([7, 7, 8, 8]))
    g = torch.Generator().manual_seed(0)
    s = q.sample(n=20, exclude_video_id=7, generator=g)
    assert s.shape == (20, 3)
    assert q.sample(n=5, exclude_video_id=-5, generator=g).shape == (5, 3)
    only7 = PixelQueue(size=4, dim=3)
    only7.enqueue(torch.ones(2, 3), torch.tensor([7, 7]))
    assert only7.sample(n=5, exclude_video_id=7).shape == (0, 3)


def test_instance_balanced_sampling_excludes_background() -> None:
    emb = torch.randn(2, 4, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :2, :2] = True  # 4 pixels
    masks[1] = True  # 64 pixels
    out, vids = sample_foreground_pixels(
        pixel_embeddings=emb, masks=masks, video_ids=torch.tensor([3, 4]), per_object=10
    )
    assert out.shape == (14, 4) and vids.tolist() == [3] * 4 + [4] * 10
    fg0 = emb[0].permute(1, 2, 0)[:2, :2].reshape(-1, 4)
    assert all(any(torch.equal(r, f) for f in fg0) for r in out[:4])


def test_uniqueness_loss_gradient_and_empty_queue() -> None:
    cfg = UniquenessConfig(weight=1.0, negatives_per_query=16)
    queries = torch.randn(2, 4, requires_grad=True)
    empty = PixelQueue(size=8, dim=4)
    loss0 = uniqueness_loss(queries=queries, video_ids=torch.tensor([0, 1]), queue=empty, cfg=cfg)
    assert loss0.item() == 0.0 and loss0.requires_grad
    q = PixelQueue(size=64, dim=4)
    q.enqueue(torch.randn(32, 4), torch.full((32,), 9))
    loss = uniqueness_loss(
        queries=queries,
        video_ids=torch.tensor([0, 1]),
        queue=q,
        cfg=cfg,
        generator=torch.Generator().manual_seed(0),
    )
    assert loss.item() > 0
    loss.backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0


def test_geo_transform_points_follow_pixels() -> None:
    g = torch.Generator().manual_seed(3)
    cfg = EquivarianceConfig(hflip_prob=1.0, min_crop=0.5)
    t = random_geo_transform(cfg=cfg, generator=g)
    h = w = 64
    img = torch.zeros(1, 1, h, w)
    img[0, 0, 20:24, 40:44] = 1.0
    out = t.apply(img, mode="nearest")
    ys, xs = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
    pt = t.apply_points(torch.tensor([42.0, 22.0]), size=(h, w))
    assert abs(xs.float().mean() - pt[0]) < 2.5 and abs(ys.float().mean() - pt[1]) < 2.5


def test_equivariance_loss_zero_for_equivariant_model() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 1, kernel_size=1)  # pointwise: commutes with flip and resampling
    x = torch.randn(2, 3, 32, 32)
    cfg = EquivarianceConfig(weight=3.0, gt_weight=0.0)
    t = random_geo_transform(cfg=cfg, generator=torch.Generator().manual_seed(1))
    pred = conv(x).squeeze(1)
    pred_t = conv(t.apply(x)).squeeze(1)
    loss = equivariance_loss(
        pred_on_transformed=pred_t,
        pred_on_original=pred,
        transform=t,
        gt_transformed=None,
        cfg=cfg,
    )
    assert loss.item() < 1e-5
    # a model that ignores the transform is penalised
    bad = equivariance_loss(
        pred_on_transformed=pred.flip(-1) * 3,
        pred_on_original=pred,
        transform=t,
        gt_transformed=None,
        cfg=cfg,
    )
    assert bad.item() > 1e-2


def test_soft_consistency_zero_iff_equal() -> None:
    logits = torch.randn(3, 8, 8)
    assert soft_consistency_loss(logits, torch.sigmoid(logits)).item() < 1e-6
    assert soft_consistency_loss(logits, torch.sigmoid(-logits)).item() > 1e-2


def test_uniqueness_loss_all_negatives_matches_manual_and_skips_own_video() -> None:
    from sam2_core.train.iuq import focal_to_zero

    cfg = UniquenessConfig(weight=1.0)  # negatives_per_query=0: every other-video entry
    q = PixelQueue(size=16, dim=3)
    bank = torch.randn(6, 3)
    q.enqueue(bank, torch.tensor([1, 1, 2, 2, 2, 3]))
    queries = torch.randn(2, 3)
    loss = uniqueness_loss(queries=queries, video_ids=torch.tensor([2, 9]), queue=q, cfg=cfg)
    f0 = focal_to_zero(bank[[0, 1, 5]] @ queries[0], alpha=0.25, gamma=2.0).mean()
    f1 = focal_to_zero(bank @ queries[1], alpha=0.25, gamma=2.0).mean()
    torch.testing.assert_close(loss, (f0 + f1) / 2)
    # a query whose video fills the whole queue has no negatives and is left out
    only = uniqueness_loss(queries=queries, video_ids=torch.tensor([2, 2]), queue=q, cfg=cfg)
    assert only.item() > 0
    q2 = PixelQueue(size=4, dim=3)
    q2.enqueue(torch.randn(2, 3), torch.tensor([5, 5]))
    assert uniqueness_loss(queries=queries, video_ids=torch.tensor([5, 5]), queue=q2, cfg=cfg) == 0
