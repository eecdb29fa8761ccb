"""Listing helpers and picklable lazy loaders shared by the dataset readers.

Loaders are small classes rather than closures so that records can be pickled (DataLoader
workers started with spawn/forkserver). Each loader resolves its filesystem when called, never
holding a filesystem object that could cross a fork.
"""

from __future__ import annotations

import functools
import io
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam2_core import storage
from sam2_core.data.readers.records import DataError


def list_entries(url: str) -> list[tuple[str, bool]]:
    """``(name, is_dir)`` of the direct children of ``url``, sorted by name; [] if absent."""
    fs, path = storage.get_fs(url)
    try:
        if not fs.exists(path):
            return []
        infos = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for info in infos:
        name = posixpath.basename(str(info["name"]).rstrip("/"))
        if name and str(info["name"]).rstrip("/") != path.rstrip("/"):
            out.append((name, info.get("type") == "directory"))
    return sorted(set(out))


def frame_index_of(name: str, *, source: str) -> int:
    """Original frame index of a file named like ``00004.jpg``."""
    stem = name.rsplit(".", 1)[0]
    try:
        return int(stem)
    except ValueError:
        raise DataError(f"{source}/{name}: frame file name is not a frame number") from None


def list_frames(dir_url: str, suffixes: tuple[str, ...]) -> dict[int, str]:
    """``frame index -> file name`` of the files in ``dir_url`` with one of ``suffixes``."""
    frames: dict[int, str] = {}
    for name, is_dir in list_entries(dir_url):
        if is_dir or not name.lower().endswith(suffixes) or name.startswith("."):
            continue
        idx = frame_index_of(name, source=dir_url)
        if idx in frames:
            raise DataError(f"{dir_url}: frame {idx} appears twice ({frames[idx]}, {name})")
        frames[idx] = name
    return frames


def read_list_file(url: str) -> list[str]:
    """Non-empty, stripped lines of a text file (DAVIS ImageSets, SA-V ``sav_val.txt``)."""
    return [ln.strip() for ln in storage.read_text(url).splitlines() if ln.strip()]


def read_annotation_json(url: str) -> Any:
    """The parsed annotation file at ``url``; a missing or malformed file is a
    :class:`DataError` naming it."""
    try:
        return storage.read_json(url)
    except FileNotFoundError:
        raise DataError(f"{url}: annotation file not found") from None
    except ValueError as e:
        raise DataError(f"{url}: not valid JSON ({e})") from e


@dataclass(frozen=True)
class FrameFileLoader:
    """Loads a frame's encoded bytes from ``dir_url/<name>``: a picklable ``load_image_bytes``."""

    dir_url: str
    names: dict[int, str]

    def __call__(self, frame_index: int) -> bytes:
        name = self.names.get(frame_index)
        if name is None:
            raise KeyError(f"{self.dir_url}: no frame {frame_index}")
        return storage.read_bytes(storage.join(self.dir_url, name))


@functools.lru_cache(maxsize=16)
def read_png_array(url: str) -> np.ndarray:
    """PNG as stored: palette indices for mode P, grey levels for L/1 ``uint8 [H, W]``.

    Cached so that the several objects of one palette frame decode the file once.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(storage.read_bytes(url))) as im:
            arr = np.array(im if im.mode in ("P", "L", "1") else im.convert("L"))
    except OSError as e:
        raise DataError(f"{url}: cannot read PNG ({e})") from e
    arr = arr.astype(np.uint8) if arr.dtype != np.uint8 else arr
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class BinaryPngLoader:
    """One object's mask from a binary PNG (any non-zero pixel is the object)."""

    url: str

    def __call__(self) -> np.ndarray:
        return read_png_array(self.url) > 0


@dataclass(frozen=True)
class PaletteObjectLoader:
    """One object's mask from a palette PNG where pixel value == object id (255 = void)."""

    url: str
    obj_id: int

    def __call__(self) -> np.ndarray:
        return read_png_array(self.url) == self.obj_id
