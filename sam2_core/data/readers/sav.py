"""SA-V readers: raw mp4 + annotation JSON, and the val/test (or extracted) frame layout.

Raw layout (train): ``<vid>.mp4`` (24 fps) with ``<vid>_manual.json`` and optionally
``<vid>_auto.json``, directly under the root or one folder level down (the download tarballs).
``masklet[i]`` annotates video frame ``ann_every * i`` (``ann_every`` = 4, or 24 // ``fps`` when
the JSON has an ``fps`` key); each entry is a list over objects of COCO RLE or null.

Frame layout (val/test, and ``sam2kf extract`` output)::

    JPEGImages_24fps/<vid>/<frame:05d>.jpg
    Annotations_6fps/<vid>/<obj:03d>/<frame:05d>.png     (binary, one per object and frame)
    Annotations_json/<vid>_manual.json                   (extract output: RLE, preferred)
    _extract/<vid>.json                                  (extract output: completion markers)

Object ids are SA-V's ``masklet_id`` values (JSON) or the ``<obj>`` folder numbers (PNG).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from sam2_core import storage
from sam2_core.data.readers.files import (
    BinaryPngLoader,
    FrameFileLoader,
    list_entries,
    list_frames,
    read_annotation_json,
    read_list_file,
)
from sam2_core.data.readers.records import (
    CallableMask,
    DataError,
    LazyMask,
    RleMask,
    VideoObject,
    VideoRecord,
    check_video_id,
)
from sam2_core.data.readers.video import Mp4FrameCache, probe_video

ANN_EVERY = 4
FRAMES_DIR = "JPEGImages_24fps"
MASKS_DIR = "Annotations_6fps"
JSON_DIR = "Annotations_json"
#: Folder of per-video completion markers written last by ``sam2kf extract``.
MARKER_DIR = "_extract"
ANNOTATION_KINDS = ("manual", "auto")


# ----------------------------------------------------------------------------- annotation JSON
def load_annotation(url: str) -> dict[str, Any]:
    """Read and structurally check an SA-V annotation JSON (``masklet`` lists agree in length)."""
    ann = read_annotation_json(url)
    if not isinstance(ann, dict) or not isinstance(ann.get("masklet"), list):
        raise DataError(f"{url}: not an SA-V annotation (no 'masklet' list)")
    num = _num_objects(ann, url)
    for i, entry in enumerate(ann["masklet"]):
        if entry is not None and (not isinstance(entry, list) or len(entry) != num):
            got = len(entry) if isinstance(entry, list) else type(entry).__name__
            raise DataError(f"{url}: masklet[{i}] has {got} objects, expected {num}")
    if "video_id" in ann:
        check_video_id(str(ann["video_id"]), source=url)
    return ann


def _num_objects(ann: dict[str, Any], url: str) -> int:
    ids = ann.get("masklet_id")
    if ids is not None:
        if not isinstance(ids, list):
            raise DataError(f"{url}: 'masklet_id' is not a list")
        if "masklet_num" in ann and int(ann["masklet_num"]) != len(ids):
            raise DataError(
                f"{url}: masklet_num {ann['masklet_num']} != {len(ids)} entries in masklet_id"
            )
        return len(ids)
    if "masklet_num" in ann:
        return int(ann["masklet_num"])
    first: list[Any] = next((e for e in ann["masklet"] if e is not None), [])
    return len(first)


def ann_every_of(ann: dict[str, Any]) -> int:
    """Video frames per annotated frame: 24 // ``fps`` if the JSON says, else 4."""
    fps = ann.get("fps")
    return max(1, 24 // int(fps)) if fps else ANN_EVERY


def object_ids(ann: dict[str, Any]) -> list[int]:
    ids = ann.get("masklet_id")
    if ids is None:
        n = len(next((e for e in ann["masklet"] if e is not None), []))
        return list(range(n))
    return [int(i) for i in ids]


def validate_annotation(
    ann: dict[str, Any],
    *,
    source: str,
    frame_count: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> None:
    """Check the JSON against the video: frame count, size, and every RLE's size.

    ``frame_count`` None skips the count checks (frame folders hold a subset of the frames).
    """
    jc = ann.get("video_frame_count")
    if frame_count is not None and jc is not None and int(float(jc)) != frame_count:
        raise DataError(
            f"{source}: video_frame_count {int(float(jc))} disagrees with the video "
            f"({frame_count} frames)"
        )
    if frame_count is not None:
        limit = math.ceil(frame_count / ann_every_of(ann))
        if len(ann["masklet"]) > limit:
            raise DataError(
                f"{source}: {len(ann['masklet'])} annotated frames but the video has only "
                f"{frame_count} frames (at most {limit} annotated)"
            )
    for key, actual in (("video_height", height), ("video_width", width)):
        val = ann.get(key)
        if actual is not None and val is not None and int(float(val)) != actual:
            raise DataError(
                f"{source}: {key} {int(float(val))} disagrees with the video ({actual})"
            )
    if height is None or width is None:
        return
    for i, entry in enumerate(ann["masklet"]):
        for k, rle in enumerate(entry or []):
            if rle is None:
                continue
            size = rle.get("size") if isinstance(rle, dict) else None
            if size is None or "counts" not in rle:
                raise DataError(f"{source}: masklet[{i}][{k}] is not a COCO RLE")
            if int(size[0]) != height or int(size[1]) != width:
                raise DataError(
                    f"{source}: masklet[{i}][{k}] RLE size {list(size)} disagrees with the "
                    f"video size [{height}, {width}]"
                )


def objects_from_annotation(
    ann: dict[str, Any], *, frames: set[int] | None = None
) -> tuple[dict[int, VideoObject], list[int]]:
    """``(objects, annotated frame indices)`` with lazy RLE masks.

    ``frames``: keep only annotations on these video frames (those that have images).
    """
    every = ann_every_of(ann)
    ids = object_ids(ann)
    objects = {oid: VideoObject(obj_id=oid) for oid in ids}
    annotated = []
    for i, entry in enumerate(ann["masklet"]):
        fidx = i * every
        if entry is None or (frames is not None and fidx not in frames):
            continue
        annotated.append(fidx)
        for oid, rle in zip(ids, entry):
            if rle is not None:
                objects[oid].masks[fidx] = RleMask(rle)
    return objects, annotated


# ----------------------------------------------------------------------------- raw videos
def list_raw_videos(url: str, *, errors: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``(video id, mp4 url)`` for ``*.mp4`` under ``url`` and one folder level down, by id.

    Bad names and duplicate ids raise DataError, or are recorded in ``errors`` (name -> problem)
    when given, so that one bad file does not hide the others.
    """
    found: dict[str, str] = {}
    entries = list_entries(url)
    subdirs = [name for name, is_dir in entries if is_dir and not name.startswith((".", "_"))]
    candidates = [(url, name) for name, is_dir in entries if not is_dir]
    for sub in subdirs:
        sub_url = storage.join(url, sub)
        candidates += [(sub_url, n) for n, d in list_entries(sub_url) if not d]
    for parent, name in candidates:
        if not name.lower().endswith(".mp4") or name.startswith("."):
            continue
        mp4 = storage.join(parent, name)
        try:
            vid = check_video_id(name[: -len(".mp4")], source=mp4)
            if vid in found:
                raise DataError(f"video id {vid!r} appears twice: {found[vid]} and {mp4}")
        except DataError as e:
            if errors is None:
                raise
            errors[mp4] = str(e)
            continue
        found[vid] = mp4
    return sorted(found.items())


def annotation_url(mp4_url: str, video_id: str, kind: str = "manual") -> str:
    if kind not in ANNOTATION_KINDS:
        raise ValueError(f"annotations must be one of {ANNOTATION_KINDS}, not {kind!r}")
    parent = mp4_url.rsplit("/", 1)[0] if "/" in mp4_url else "."
    return storage.join(parent, f"{video_id}_{kind}.json")


def read_raw_video(
    video_id: str,
    mp4_url: str,
    *,
    annotations: str = "manual",
    frames: str = "annotated",
) -> VideoRecord:
    """One raw SA-V video as a record (validated against the video's header and first frame).

    ``frames="annotated"`` exposes the annotated frames (every 4th: what training uses);
    ``"all"`` exposes every frame. Images are decoded from the mp4 on first access.
    """
    ann_url = annotation_url(mp4_url, video_id, annotations)
    ann = load_annotation(ann_url)
    if "video_id" in ann and str(ann["video_id"]) != video_id:
        raise DataError(f"{ann_url}: video_id {ann['video_id']!r} does not match {mp4_url}")
    info = probe_video(mp4_url)
    count = info.frame_count or int(float(ann.get("video_frame_count", 0)))
    validate_annotation(
        ann,
        source=ann_url,
        frame_count=info.frame_count or None,
        height=info.height,
        width=info.width,
    )
    objects, annotated = objects_from_annotation(ann)
    annotated = [f for f in annotated if f < count] if count else annotated
    if frames == "all":
        indices = list(range(count))
    elif frames == "annotated":
        indices = list(annotated) or [i * ann_every_of(ann) for i in range(len(ann["masklet"]))]
    else:
        raise ValueError(f"frames must be 'annotated' or 'all', not {frames!r}")
    return VideoRecord(
        video_id=video_id,
        height=info.height,
        width=info.width,
        frame_indices=indices,
        annotated_indices=annotated,
        objects=objects,
        load_image_bytes=Mp4FrameCache(mp4_url, tuple(indices)),
        source=mp4_url,
        split=str(ann.get("video_split") or "train"),
    )


def iter_sav_raw(
    url: str,
    *,
    annotations: str = "manual",
    split: str | None = None,
    frames: str = "annotated",
    select: Callable[[str], bool] | None = None,
) -> Iterator[VideoRecord]:
    """Records of every ``<vid>.mp4`` under ``url`` (split filters on the JSON's video_split;
    ``select`` on the id, before anything of the video is read)."""
    for vid, mp4 in list_raw_videos(url):
        if select is not None and not select(vid):
            continue
        rec = read_raw_video(vid, mp4, annotations=annotations, frames=frames)
        if split is None or rec.split == split:
            yield rec


# ----------------------------------------------------------------------------- frame layout
def _split_ids(url: str, split: str) -> list[str]:
    """Video ids of a split from ``<split>.txt``, ``sav_<split>.txt`` or ``ImageSets/<split>.txt``."""
    tried = [
        storage.join(url, f"{split}.txt"),
        storage.join(url, f"sav_{split}.txt"),
        storage.join(url, "ImageSets", f"{split}.txt"),
    ]
    for cand in tried:
        if storage.exists(cand):
            return [check_video_id(v, source=cand) for v in read_list_file(cand)]
    raise DataError(f"{url}: split {split!r} has no video list (looked for {', '.join(tried)})")


def completed_videos(url: str) -> set[str] | None:
    """Ids with an extraction completion marker, or None when ``url`` is not extract output."""
    marker_dir = storage.join(url, MARKER_DIR)
    entries = list_entries(marker_dir)
    if not entries and not storage.exists(marker_dir):
        return None
    return {n[: -len(".json")] for n, d in entries if not d and n.endswith(".json")}


def _image_size(url: str) -> tuple[int, int]:
    """``(height, width)`` from an image header (reads only the first bytes)."""
    from PIL import Image

    fs, path = storage.get_fs(url)
    with fs.open(path, "rb", block_size=1 << 16) as f, Image.open(f) as im:
        return int(im.height), int(im.width)


def read_frames_video(url: str, video_id: str, *, annotations: str = "manual") -> VideoRecord:
    """One video of the SA-V frame layout (JSON annotations preferred over per-object PNGs)."""
    check_video_id(video_id, source=url)
    frame_dir = storage.join(url, FRAMES_DIR, video_id)
    names = list_frames(frame_dir, (".jpg", ".jpeg"))
    if not names:
        raise DataError(f"{frame_dir}: no JPEG frames")
    indices = sorted(names)
    height, width = _image_size(storage.join(frame_dir, names[indices[0]]))
    ann_url = storage.join(url, JSON_DIR, f"{video_id}_{annotations}.json")
    if storage.exists(ann_url):
        ann = load_annotation(ann_url)
        validate_annotation(ann, source=ann_url, height=height, width=width)
        jc = ann.get("video_frame_count")
        if jc is not None and indices[-1] >= int(float(jc)):
            raise DataError(
                f"{ann_url}: video_frame_count {int(float(jc))} but frame {indices[-1]} exists"
            )
        objects, annotated = objects_from_annotation(ann, frames=set(indices))
    else:
        objects, annotated = _png_objects(storage.join(url, MASKS_DIR, video_id), set(indices))
    return VideoRecord(
        video_id=video_id,
        height=height,
        width=width,
        frame_indices=indices,
        annotated_indices=annotated,
        objects=objects,
        load_image_bytes=FrameFileLoader(frame_dir, names),
        source=frame_dir,
    )


def _png_objects(mask_dir: str, frames: set[int]) -> tuple[dict[int, VideoObject], list[int]]:
    objects: dict[int, VideoObject] = {}
    annotated: set[int] = set()
    for name, is_dir in list_entries(mask_dir):
        if not is_dir:
            continue
        try:
            oid = int(name)
        except ValueError:
            raise DataError(f"{mask_dir}/{name}: object folder name is not a number") from None
        obj_dir = storage.join(mask_dir, name)
        masks: dict[int, LazyMask] = {}
        for fidx, fname in list_frames(obj_dir, (".png",)).items():
            if fidx in frames:
                masks[fidx] = CallableMask(BinaryPngLoader(storage.join(obj_dir, fname)))
        objects[oid] = VideoObject(obj_id=oid, masks=dict(sorted(masks.items())))
        annotated.update(masks)
    return objects, sorted(annotated)


def iter_sav_frames(
    url: str,
    *,
    annotations: str = "manual",
    split: str | None = None,
    select: Callable[[str], bool] | None = None,
) -> Iterator[VideoRecord]:
    """Records of the SA-V val/test frame layout (or extract output: only completed videos;
    ``select`` filters on the id)."""
    vids = [
        n for n, d in list_entries(storage.join(url, FRAMES_DIR)) if d and not n.startswith(".")
    ]
    done = completed_videos(url)
    if done is not None:
        vids = [v for v in vids if v in done]  # half-extracted videos are invisible
    if split is not None:
        wanted = set(_split_ids(url, split))
        vids = [v for v in vids if v in wanted]
    if select is not None:
        vids = [v for v in vids if select(v)]
    for vid in vids:
        rec = read_frames_video(url, vid, annotations=annotations)
        if split is not None:
            rec.split = split
        yield rec
