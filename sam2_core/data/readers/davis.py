"""DAVIS 2017 / MOSE reader: JPEG frames plus palette PNG annotations.

Layout (``480p`` or ``Full-Resolution`` subfolders are optional; MOSE has none)::

    JPEGImages[/480p]/<vid>/00000.jpg
    Annotations[/480p]/<vid>/00000.png      palette PNG: pixel value = object id, 0 = background
    ImageSets/2017/<split>.txt              optional video lists (or <split>.txt at the root)

Pixel value 255 marks DAVIS "void" pixels (uncertain borders): it is not an object, and
:func:`void_mask` exposes it for evaluators that ignore those pixels. MOSE validation annotates
only the first frame; a frame's annotation exists exactly when its PNG does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from sam2_core import storage
from sam2_core.data.readers.files import (
    FrameFileLoader,
    PaletteObjectLoader,
    list_entries,
    list_frames,
    read_list_file,
    read_png_array,
)
from sam2_core.data.readers.records import (
    CallableMask,
    DataError,
    LazyMask,
    VideoObject,
    VideoRecord,
    check_video_id,
)

VOID = 255
RESOLUTIONS = ("480p", "Full-Resolution")


def resolution_dirs(url: str, resolution: str | None = None) -> tuple[str, str]:
    """``(frames root, annotations root)``, using a resolution subfolder when present."""
    frames, annots = storage.join(url, "JPEGImages"), storage.join(url, "Annotations")
    sub = {n for n, d in list_entries(frames) if d}
    choices = [resolution] if resolution else list(RESOLUTIONS)
    for res in choices:
        if res in sub:
            return storage.join(frames, res), storage.join(annots, res)
    if resolution:
        raise DataError(f"{frames}: no {resolution!r} subfolder")
    return frames, annots


def split_ids(url: str, split: str) -> list[str]:
    """Video ids of a split from ``ImageSets/<year>/<split>.txt``, ``ImageSets/<split>.txt``
    or ``<split>.txt``."""
    tried = [storage.join(url, "ImageSets", y, f"{split}.txt") for y in ("2017", "2016", "2019")]
    tried += [storage.join(url, "ImageSets", f"{split}.txt"), storage.join(url, f"{split}.txt")]
    for cand in tried:
        if storage.exists(cand):
            return [check_video_id(v, source=cand) for v in read_list_file(cand)]
    raise DataError(f"{url}: split {split!r} has no video list (looked for {', '.join(tried)})")


def void_mask(png_url: str) -> np.ndarray:
    """``bool [H, W]``: the void (255) pixels of a DAVIS annotation PNG."""
    return read_png_array(png_url) == VOID


def read_davis_video(frames_root: str, annots_root: str, video_id: str) -> VideoRecord:
    """One DAVIS/MOSE video; object ids come from the union of its annotation PNGs."""
    from PIL import Image

    check_video_id(video_id, source=frames_root)
    frame_dir = storage.join(frames_root, video_id)
    names = list_frames(frame_dir, (".jpg", ".jpeg", ".png"))
    if not names:
        raise DataError(f"{frame_dir}: no frames")
    ann_dir = storage.join(annots_root, video_id)
    pngs = {i: n for i, n in list_frames(ann_dir, (".png",)).items() if i in names}
    height = width = 0
    ids: set[int] = set()
    for _, name in sorted(pngs.items()):
        arr = read_png_array(storage.join(ann_dir, name))
        if height == 0:
            height, width = arr.shape
        elif arr.shape != (height, width):
            raise DataError(
                f"{ann_dir}/{name}: size {arr.shape[0]}x{arr.shape[1]} differs from "
                f"{height}x{width} of the first annotation"
            )
        ids.update(int(v) for v in np.unique(arr))
    ids -= {0, VOID}
    if height == 0:  # no annotations at all (e.g. a test split): size from the first image
        fs, path = storage.get_fs(storage.join(frame_dir, names[min(names)]))
        with fs.open(path, "rb") as f, Image.open(f) as im:
            height, width = im.height, im.width
    objects = {}
    for oid in sorted(ids):
        masks: dict[int, LazyMask] = {
            fidx: CallableMask(PaletteObjectLoader(storage.join(ann_dir, name), oid))
            for fidx, name in sorted(pngs.items())
        }
        objects[oid] = VideoObject(obj_id=oid, masks=masks)
    return VideoRecord(
        video_id=video_id,
        height=height,
        width=width,
        frame_indices=sorted(names),
        annotated_indices=sorted(pngs),
        objects=objects,
        load_image_bytes=FrameFileLoader(frame_dir, names),
        source=frame_dir,
    )


def iter_davis(
    url: str,
    *,
    split: str | None = None,
    resolution: str | None = None,
    select: Callable[[str], bool] | None = None,
) -> Iterator[VideoRecord]:
    """Records of a DAVIS 2017 or MOSE folder (all videos, or those listed for ``split``;
    ``select`` filters on the id)."""
    frames_root, annots_root = resolution_dirs(url, resolution)
    present = [n for n, d in list_entries(frames_root) if d and n not in RESOLUTIONS]
    if split is not None:
        listed = split_ids(url, split)
        missing = sorted(set(listed) - set(present))
        if missing:
            raise DataError(f"{url}: split {split!r} lists videos without frames: {missing[:5]}")
        present = listed
    if select is not None:
        present = [v for v in present if select(v)]
    for vid in present:
        rec = read_davis_video(frames_root, annots_root, vid)
        if split is not None:
            rec.split = split
        yield rec
