"""Dataset format detection and one entry point, :func:`iter_videos`, for every reader.

Formats: ``sav_raw`` (SA-V mp4 + JSON), ``sav_frames`` (SA-V val/test layout, also the output
of ``sam2kf extract``), ``davis`` (DAVIS 2017 / MOSE), ``sa1b`` (SA-1B images), ``parquet``
(shards written by ``sam2kf shard``). Any fsspec URL works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sam2_core import storage
from sam2_core.data.readers.davis import iter_davis
from sam2_core.data.readers.files import list_entries
from sam2_core.data.readers.records import DataError, VideoRecord
from sam2_core.data.readers.sa1b import iter_sa1b
from sam2_core.data.readers.sav import iter_sav_frames, iter_sav_raw
from sam2_core.data.readers.shards import iter_shard_videos

FORMATS = ("sav_raw", "sav_frames", "davis", "sa1b", "parquet")


def _classify(entries: list[tuple[str, bool]]) -> str | None:
    names = {n for n, _ in entries}
    files = [n for n, d in entries if not d]
    if (
        "manifest.json" in names
        or "index.parquet" in names
        or any(n.endswith(".parquet") for n in files)
    ):
        return "parquet"
    if "JPEGImages_24fps" in names:
        return "sav_frames"
    if "JPEGImages" in names:
        return "davis"
    if any(n.lower().endswith(".mp4") for n in files):
        return "sav_raw"
    if any(n.startswith("sa_") and n.lower().endswith(".jpg") for n in files):
        return "sa1b"
    return None


def detect_format(url: str) -> str:
    """Guess the dataset format of a folder (or a ``.parquet`` file) from its listing.

    Looks at the folder itself, then (for raw SA-V and SA-1B, which come in tarball folders) at
    its first few subfolders. Raises DataError for a missing or empty folder or an unknown layout.
    """
    if url.rstrip("/").endswith(".parquet"):
        return "parquet"
    if not storage.exists(url):
        raise DataError(f"{url}: dataset not found")
    entries = [(n, d) for n, d in list_entries(url) if not n.startswith(".")]
    if not entries:
        raise DataError(f"{url}: empty dataset (the folder has no files)")
    fmt = _classify(entries)
    if fmt is not None:
        return fmt
    for name in [n for n, d in entries if d][:5]:
        sub = _classify(list_entries(storage.join(url, name)))
        if sub in ("sav_raw", "sa1b"):
            return sub
    raise DataError(
        f"{url}: unknown dataset layout (expected *.mp4 + *_manual.json, JPEGImages_24fps/, "
        "JPEGImages/ + Annotations/, sa_*.jpg + sa_*.json, or Parquet shards)"
    )


def iter_videos(
    url: str,
    *,
    fmt: str = "auto",
    annotations: str = "manual",
    split: str | None = None,
    select: Callable[[str], bool] | None = None,
) -> Iterator[VideoRecord]:
    """Yield every video of a dataset as a :class:`VideoRecord` (masks decoded lazily).

    Args:
        url: dataset folder (local path or fsspec URL), or a Parquet shard folder/file.
        fmt: one of :data:`FORMATS`, or "auto" to :func:`detect_format`.
        annotations: "manual" or "auto" (SA-V annotation JSON to read).
        split: only this split (SA-V raw: the JSON's ``video_split``; frame layouts: the video
            list ``<split>.txt`` / ``ImageSets/.../<split>.txt``; parquet: the shard split).
        select: only the video ids for which this returns True, decided from the listing before
            a video is read (a data partition reads only its own videos). With a selection, an
            empty result is not an error (a partition may hold no video).

    Raises DataError (naming the file) on bad data, and when no video is found.
    """
    fmt = detect_format(url) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS} or 'auto'")
    count = 0
    for rec in _reader(url, fmt, annotations=annotations, split=split, select=select):
        count += 1
        yield rec
    if count == 0 and select is None:
        which = f" in split {split!r}" if split is not None else ""
        raise DataError(f"{url}: empty dataset (no {fmt} videos found{which})")


def _reader(
    url: str,
    fmt: str,
    *,
    annotations: str,
    split: str | None,
    select: Callable[[str], bool] | None,
) -> Iterator[VideoRecord]:
    if fmt == "sav_raw":
        return iter_sav_raw(url, annotations=annotations, split=split, select=select)
    if fmt == "sav_frames":
        return iter_sav_frames(url, annotations=annotations, split=split, select=select)
    if fmt == "davis":
        return iter_davis(url, split=split, select=select)
    if fmt == "sa1b":
        return iter_sa1b(url, split=split, select=select)
    return iter_shard_videos(url, split=split, select=select)
