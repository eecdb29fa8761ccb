"""Built-in demo dataset: real H.264 files, exact masks, determinism, SA-V JSON fields."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import pytest

from sam2_core.cli import main as cli_main
from sam2_core.data.prep.demo import DEFAULT_SIZES, render_demo_video, write_demo_dataset
from sam2_core.data.readers.rle import decode_rle

SAV_FIELDS = {
    "video_id",
    "video_duration",
    "video_frame_count",
    "video_height",
    "video_width",
    "video_resolution",
    "video_environment",
    "video_split",
    "masklet",
    "masklet_id",
    "masklet_size_rel",
    "masklet_size_abs",
    "masklet_size_bucket",
    "masklet_visibility_changes",
    "masklet_first_appeared_frame",
    "masklet_frame_count",
    "masklet_edited_frame_count",
    "masklet_type",
    "masklet_stability_score",
    "masklet_num",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], float]:
    dst = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    ids = write_demo_dataset(dst=str(dst))
    return dst, ids, time.perf_counter() - t0


def test_demo_files_are_real_h264_of_several_sizes(demo: tuple[Path, list[str], float]) -> None:
    dst, ids, seconds = demo
    assert seconds < 10  # "seconds on 2 cores" (about 0.5 s unloaded)
    assert ids == [f"demo_{i:03d}" for i in range(6)]
    sizes = set()
    for vid in ids:
        with av.open(str(dst / f"{vid}.mp4")) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264"
            assert s.codec_context.pix_fmt == "yuv420p"
            assert float(s.average_rate) == 24.0
            n = sum(1 for _ in c.decode(s))
            assert n == 48
            sizes.add((s.height, s.width))
        ann = json.loads((dst / f"{vid}_manual.json").read_text())
        assert set(ann) >= SAV_FIELDS
        assert ann["video_id"] == vid
        assert (int(ann["video_height"]), int(ann["video_width"])) == (s.height, s.width)
        assert len(ann["masklet"]) == 12  # one per 4 frames
        assert ann["masklet_num"] == len(ann["masklet_id"]) == len(ann["masklet"][0])
    assert sizes == set(DEFAULT_SIZES)


def test_demo_masks_match_drawn_objects_in_depth_order(demo: tuple[Path, list[str], float]) -> None:
    dst, ids, _ = demo
    frames, masks = render_demo_video(2, num_frames=48, seed=0, size=DEFAULT_SIZES[2])
    ann = json.loads((dst / f"{ids[2]}_manual.json").read_text())
    for i, entry in enumerate(ann["masklet"]):
        for k, rle in enumerate(entry):
            np.testing.assert_array_equal(decode_rle(rle), masks[4 * i, k])
    # Visible masks never overlap: each pixel belongs to at most the topmost object.
    assert masks.sum(axis=1).max() <= 1
    # Object pixels differ from the background where the mask is set (objects are drawn).
    with av.open(str(dst / f"{ids[2]}.mp4")) as c:
        decoded = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    assert np.abs(decoded.astype(int) - frames[0].astype(int)).mean() < 8  # lossy but close


def test_demo_has_occlusion_exits_and_late_objects() -> None:
    occluded = late = left = False
    for i in range(6):
        _, masks = render_demo_video(i, num_frames=48, seed=0, size=DEFAULT_SIZES[i])
        area = masks.sum(axis=(2, 3))  # [T, O]
        late |= bool((area[0] == 0).any() and (area[-1] > 0).any())
        left |= bool(((area[:-1] > 0) & (area[1:] == 0)).any())
        # Object 0 is drawn first (bottom) and bounces inside the frame, so its rigid shape is
        # always whole: any loss of visible area is an occlusion by an object above it.
        occluded |= bool(area[:, 0].min() < area[:, 0].max())
    assert late and left and occluded


def test_demo_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_demo_dataset(dst=str(a), num_videos=2, num_frames=12, seed=3)
    write_demo_dataset(dst=str(b), num_videos=2, num_frames=12, seed=3)
    for name in sorted(p.name for p in a.iterdir()):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    write_demo_dataset(dst=str(tmp_path / "c"), num_videos=1, num_frames=12, seed=4)
    assert (a / "demo_000_manual.json").read_bytes() != (
        tmp_path / "c" / "demo_000_manual.json"
    ).read_bytes()


def test_demo_data_cli_and_odd_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(
        [
            "demo-data",
            str(tmp_path / "d"),
            "--num-videos",
            "2",
            "--num-frames",
            "9",
            "--size",
            "98x130",
        ]
    )
    assert rc == 0
    assert "wrote 2 demo videos" in capsys.readouterr().out
    ann = json.loads((tmp_path / "d" / "demo_001_manual.json").read_text())
    assert (ann["video_height"], ann["video_width"], len(ann["masklet"])) == (98, 130, 3)
    with pytest.raises(ValueError, match="even"):
        write_demo_dataset(dst=str(tmp_path / "e"), num_videos=1, sizes=[(97, 130)])


def test_demo_is_a_fair_tracking_test() -> None:
    """Issue 18: objects of one video differ in look, one leaves the frame and comes back, and
    at 256 px (16x16 memory map) every object covers several memory cells."""
    reappears = 0
    for i in range(6):
        frames, masks = render_demo_video(i, num_frames=24, seed=0, size=DEFAULT_SIZES[i])
        h, w = DEFAULT_SIZES[i]
        area = masks.sum(axis=(2, 3))  # [T, O]
        # The object that leaves comes back: visible, then gone, then visible again.
        vis = area[:, 1] > 0
        gone = np.flatnonzero(~vis)
        reappears += int(gone.size > 0 and vis[: gone[0]].any() and vis[gone[-1] :].any())
        # Mean colour of each object where fully visible differs from every other object's.
        means = []
        for k in range(masks.shape[1]):
            t = int(np.argmax(area[:, k]))
            means.append(frames[t][masks[t, k]].reshape(-1, 3).mean(0))
        for a in range(len(means)):
            for b in range(a + 1, len(means)):
                assert np.abs(means[a] - means[b]).max() > 20, (i, a, b)
        # Largest visible area, in 16x16-pixel memory cells of a 256x256 resize.
        cells = area.max(0) * (256 / h) * (256 / w) / 16**2
        assert cells.min() >= 4, (i, cells)
    assert reappears >= 4
