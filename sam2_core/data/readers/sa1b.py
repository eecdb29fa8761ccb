"""SA-1B reader: ``sa_<id>.jpg`` + ``sa_<id>.json`` pairs, each a single-frame video.

JSON: ``{"image": {image_id, width, height, file_name}, "annotations": [{id, segmentation:
COCO RLE, area, bbox, ...}]}``. Pairs sit directly under the root or one folder level down
(extracted tar shards). Masks with zero area are dropped (as the official loader does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sam2_core import storage
from sam2_core.data.readers.files import FrameFileLoader, list_entries, read_annotation_json
from sam2_core.data.readers.records import (
    DataError,
    RleMask,
    VideoObject,
    VideoRecord,
    check_video_id,
)
from sam2_core.data.readers.rle import rle_area


def list_sa1b_images(url: str) -> list[tuple[str, str]]:
    """``(image id, folder url)`` for every ``sa_*.jpg`` under ``url`` (and one level down)."""
    found: dict[str, str] = {}
    entries = list_entries(url)
    folders = [(url, entries)]
    folders += [(storage.join(url, n), list_entries(storage.join(url, n))) for n, d in entries if d]
    for folder, items in folders:
        for name, is_dir in items:
            if is_dir or not name.startswith("sa_") or not name.lower().endswith(".jpg"):
                continue
            stem = check_video_id(name[: -len(".jpg")], source=storage.join(folder, name))
            if stem in found:
                raise DataError(f"image {stem!r} appears twice: {found[stem]} and {folder}")
            found[stem] = folder
    return sorted(found.items())


def read_sa1b_image(folder: str, stem: str) -> VideoRecord:
    """One SA-1B image as a one-frame video (frame index 0), masks validated against its size."""
    json_url = storage.join(folder, f"{stem}.json")
    data = read_annotation_json(json_url)
    info = data.get("image") if isinstance(data, dict) else None
    if not isinstance(info, dict) or "height" not in info or "width" not in info:
        raise DataError(f"{json_url}: no 'image' entry with height and width")
    height, width = int(info["height"]), int(info["width"])
    objects = {}
    for k, ann in enumerate(data.get("annotations") or []):
        rle = _segmentation(ann, json_url, k)
        if tuple(int(s) for s in rle["size"]) != (height, width):
            raise DataError(
                f"{json_url}: annotations[{k}] RLE size {list(rle['size'])} disagrees with the "
                f"image size [{height}, {width}]"
            )
        area = ann.get("area")
        if (rle_area(rle) if area is None else area) <= 0:
            continue
        oid = int(ann.get("id", k))
        objects[oid] = VideoObject(obj_id=oid, masks={0: RleMask(rle)})
    return VideoRecord(
        video_id=stem,
        height=height,
        width=width,
        frame_indices=[0],
        annotated_indices=[0],
        objects=objects,
        load_image_bytes=FrameFileLoader(folder, {0: f"{stem}.jpg"}),
        source=storage.join(folder, f"{stem}.jpg"),
    )


def _segmentation(ann: Any, json_url: str, k: int) -> dict[str, Any]:
    seg = ann.get("segmentation") if isinstance(ann, dict) else None
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise DataError(f"{json_url}: annotations[{k}] has no COCO RLE segmentation")
    return seg


def iter_sa1b(
    url: str, *, split: str | None = None, select: Callable[[str], bool] | None = None
) -> Iterator[VideoRecord]:
    """Records of every SA-1B image under ``url`` (``split`` only labels the records;
    ``select`` filters on the image stem, the record's id)."""
    for stem, folder in list_sa1b_images(url):
        if select is not None and not select(stem):
            continue
        rec = read_sa1b_image(folder, stem)
        if split is not None:
            rec.split = split
        yield rec
