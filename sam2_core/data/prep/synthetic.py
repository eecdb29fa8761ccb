"""Small synthetic videos held in memory (JPEG frames + RLE masks) for tests and benchmarks.

Each object is a textured ellipse drifting across a smooth random background; objects may leave
the frame, so some frames have invisible objects. Deterministic for a given seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np

from sam2_core import storage
from sam2_core.data.readers.records import RleMask, VideoObject, VideoRecord
from sam2_core.data.readers.rle import encode_rle


@dataclass
class _Clip:
    jpegs: dict[int, bytes]
    masks: dict[int, dict[int, dict]]


def _render(
    *,
    num_frames: int,
    height: int,
    width: int,
    num_objects: int,
    every: int,
    seed: int,
    quality: int,
) -> _Clip:
    rng = np.random.default_rng(seed)
    small = rng.integers(
        0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8
    )
    background = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    background = cv2.add(background, noise)
    centres = rng.uniform(
        [0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height], (num_objects, 2)
    )
    speeds = rng.uniform(-0.02, 0.02, (num_objects, 2)) * np.array([width, height])
    axes = rng.uniform(0.05, 0.15, (num_objects, 2)) * min(height, width)
    colours = rng.integers(0, 256, (num_objects, 3))
    jpegs: dict[int, bytes] = {}
    masks: dict[int, dict[int, dict]] = {}
    for k in range(num_frames):
        fi = k * every
        img = background.copy()
        frame_masks: dict[int, dict] = {}
        for o in range(num_objects):
            c = centres[o] + speeds[o] * k
            m = np.zeros((height, width), np.uint8)
            cv2.ellipse(
                m,
                (int(c[0]), int(c[1])),
                (int(axes[o, 0]), int(axes[o, 1])),
                15.0 * o,
                0,
                360,
                1,
                -1,
            )
            img[m > 0] = (0.6 * colours[o] + 0.4 * img[m > 0]).astype(np.uint8)
            frame_masks[o + 1] = encode_rle(m > 0)
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        jpegs[fi] = buf.tobytes()
        masks[fi] = frame_masks
    return _Clip(jpegs, masks)


def make_records(
    *,
    num_videos: int = 4,
    num_frames: int = 12,
    height: int = 72,
    width: int = 128,
    num_objects: int = 3,
    every: int = 4,
    seed: int = 0,
    quality: int = 90,
    prefix: str = "vid",
) -> list[VideoRecord]:
    """``num_videos`` in-memory :class:`VideoRecord` with JPEG frames at indices 0, every, ..."""
    out = []
    for v in range(num_videos):
        clip = _render(
            num_frames=num_frames,
            height=height,
            width=width,
            num_objects=num_objects,
            every=every,
            seed=seed * 1000 + v,
            quality=quality,
        )
        objects = {
            o: VideoObject(obj_id=o, masks={fi: RleMask(clip.masks[fi][o]) for fi in clip.masks})
            for o in range(1, num_objects + 1)
        }
        frames = sorted(clip.jpegs)
        out.append(
            VideoRecord(
                video_id=f"{prefix}_{v:04d}",
                height=height,
                width=width,
                frame_indices=frames,
                annotated_indices=frames,
                objects=objects,
                load_image_bytes=clip.jpegs.__getitem__,
                source=f"synthetic:{prefix}_{v:04d}",
            )
        )
    return out


def write_frame_folders(records: list[VideoRecord], dst: str) -> None:
    """Write records in the SA-V val/test layout that ``sam2kf extract`` produces.

    ``dst/JPEGImages_24fps/<vid>/<frame:05d>.jpg`` and ``dst/Annotations_json/<vid>_manual.json``
    (SA-V masklet JSON: annotated entry ``i`` is frame ``every * i``).
    """
    for rec in records:
        for fi in rec.frame_indices:
            storage.write_bytes_atomic(
                storage.join(dst, "JPEGImages_24fps", rec.video_id, f"{fi:05d}.jpg"),
                rec.image_bytes(fi),
            )
        ids = rec.obj_ids
        masklet = [[rec.objects[o].masks[fi].to_rle() for o in ids] for fi in rec.annotated_indices]
        step = (
            rec.annotated_indices[1] - rec.annotated_indices[0]
            if len(rec.annotated_indices) > 1
            else 4
        )
        ann = {
            "video_id": rec.video_id,
            "video_frame_count": rec.annotated_indices[-1] + 1,
            "video_height": rec.height,
            "video_width": rec.width,
            "masklet": masklet,
            "masklet_id": [o - 1 for o in ids],
            "masklet_first_appeared_frame": [0 for _ in ids],
            "masklet_num": len(ids),
            "annotation_every": step,
        }
        storage.write_bytes_atomic(
            storage.join(dst, "Annotations_json", f"{rec.video_id}_manual.json"),
            json.dumps(ann).encode(),
        )
