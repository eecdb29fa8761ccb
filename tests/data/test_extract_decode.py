"""Streaming decode: skipping unwanted non-reference frames gives exactly the same kept frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam2_core.data.prep.demo import encode_mp4, render_demo_video
from sam2_core.data.readers.records import DataError
from sam2_core.data.readers.video import DecodeStats, decode_frames, probe_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    imgs, _ = render_demo_video(3, num_frames=40, seed=9, size=(72, 112))
    path = tmp_path_factory.mktemp("clip") / "c.mp4"
    path.write_bytes(encode_mp4(imgs))  # x264 veryfast: B-frames, half of them non-reference
    return path


@pytest.mark.parametrize("every", [2, 4, 5])
def test_skipping_nonref_frames_changes_nothing(clip: Path, every: int) -> None:
    full, fast = DecodeStats(), DecodeStats()
    keep = lambda i: i % every == 0  # noqa: E731
    a = [
        (i, np.asarray(im))
        for i, im in decode_frames(str(clip), keep=keep, stats=full, skip_unused=False)
    ]
    b = [(i, np.asarray(im)) for i, im in decode_frames(str(clip), keep=keep, stats=fast)]
    assert [i for i, _ in a] == [i for i, _ in b] == list(range(0, 40, every))
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert full.decoded == fast.decoded == full.header_frames == 40
    assert full.skipped == 0 and fast.skipped > 0


def test_probe_and_truncation(clip: Path, tmp_path: Path) -> None:
    info = probe_video(str(clip))
    assert (info.frame_count, info.height, info.width, info.fps) == (40, 72, 112, 24.0)
    imgs, _ = render_demo_video(3, num_frames=40, seed=9, size=(72, 112))
    data = encode_mp4(imgs, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.mp4: truncated or corrupt video \(decoded \d+ of 40"):
        list(decode_frames(str(cut), keep=lambda i: i % 4 == 0))


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    import av

    img = np.zeros((48, 64, 3), np.uint8)
    img[:8, :8] = 255  # bright top-left corner of the stored picture
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(90)  # display matrix: 90 degrees counter-clockwise
        for _ in range(4):
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    info = probe_video(str(path))
    assert (info.height, info.width, info.rotation) == (64, 48, 90)
    (_, im), *_ = list(decode_frames(str(path), keep=lambda i: i == 0))
    up = np.asarray(im)
    assert up.shape == (64, 48, 3)
    assert up[60:, :4].mean() > 200 and up[:4, :4].mean() < 50  # corner turned to bottom-left
