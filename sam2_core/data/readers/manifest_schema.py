"""The schema of a shard directory's ``manifest.json``, checked before any field is used.

A manifest is trusted by every reader (it vouches for the files), so a hand-edited or damaged
one must fail with one line naming the field, not later with a type error or, worse, silently
(``rows: "six"``). Fields this version does not know are left to the dataclass (which refuses
them); fields it knows must have the right type and range, and the counts must add up.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from sam2_core.data.readers.records import DataError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _where(source: str, field: str) -> str:
    return f"{source}: field {field}"


def _int(obj: dict[str, Any], key: str, *, source: str, prefix: str = "") -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DataError(f"{_where(source, prefix + key)} must be an integer, got {v!r}")
    if v < 0:
        raise DataError(f"{_where(source, prefix + key)} must be >= 0, got {v}")
    return v


def _str(obj: dict[str, Any], key: str, *, source: str, prefix: str = "") -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise DataError(f"{_where(source, prefix + key)} must be a string, got {v!r}")
    return v


def _hex(
    obj: dict[str, Any], key: str, *, source: str, prefix: str = "", empty: bool = False
) -> str:
    v = _str(obj, key, source=source, prefix=prefix)
    if not (_HEX64.match(v) or (empty and v == "")):
        raise DataError(f"{_where(source, prefix + key)} must be a sha256 hex digest, got {v!r}")
    return v


def _file_name(obj: dict[str, Any], key: str, *, source: str, prefix: str) -> str:
    v = _str(obj, key, source=source, prefix=prefix)
    norm = posixpath.normpath(v) if v else ""
    if (
        not v.endswith(".parquet")
        or v.startswith("/")
        or "\\" in v
        or norm != v
        or norm.startswith("..")
    ):
        raise DataError(
            f"{_where(source, prefix + key)} must be a relative .parquet path inside the "
            f"directory, got {v!r}"
        )
    return v


def validate_manifest(obj: Any, *, source: str) -> None:
    """Raise DataError (naming ``source`` and the field) unless ``obj`` is a valid manifest.

    Checks: every known field's type and range; sha256 fields are hex digests; shard paths
    stay inside the directory; ``row_group_rows`` has ``row_groups`` entries summing to
    ``rows``; ``num_frames`` equals the rows of all shards and of all splits; ``num_videos``
    equals the videos of all splits.
    """
    if not isinstance(obj, dict):
        raise DataError(f"{source}: must be a JSON object, got {type(obj).__name__}")
    num_videos = _int(obj, "num_videos", source=source)
    num_frames = _int(obj, "num_frames", source=source)
    _int(obj, "index_bytes", source=source)
    _int(obj, "schema_version", source=source)
    _str(obj, "format", source=source)
    _hex(obj, "index_sha256", source=source)
    _hex(obj, "content_hash", source=source)
    if not isinstance(obj.get("params", {}), dict):
        raise DataError(f"{_where(source, 'params')} must be an object")
    splits = obj.get("splits")
    if not isinstance(splits, dict):
        raise DataError(f"{_where(source, 'splits')} must be an object, got {splits!r}")
    split_videos = split_frames = 0
    for name, counts in splits.items():
        if not isinstance(counts, dict):
            raise DataError(f"{_where(source, f'splits.{name}')} must be an object")
        split_videos += _int(counts, "videos", source=source, prefix=f"splits.{name}.")
        split_frames += _int(counts, "frames", source=source, prefix=f"splits.{name}.")
    shards = obj.get("shards")
    if not isinstance(shards, list):
        raise DataError(f"{_where(source, 'shards')} must be a list, got {shards!r}")
    rows_total = 0
    seen: set[str] = set()
    for i, s in enumerate(shards):
        p = f"shards[{i}]."
        if not isinstance(s, dict):
            raise DataError(f"{_where(source, f'shards[{i}]')} must be an object")
        file = _file_name(s, "file", source=source, prefix=p)
        if file in seen:
            raise DataError(f"{_where(source, p + 'file')}: {file} is listed twice")
        seen.add(file)
        _str(s, "split", source=source, prefix=p)
        rows = _int(s, "rows", source=source, prefix=p)
        groups = _int(s, "row_groups", source=source, prefix=p)
        _int(s, "videos", source=source, prefix=p)
        _int(s, "bytes", source=source, prefix=p)
        _hex(s, "sha256", source=source, prefix=p)
        if "footer_sha256" in s:
            _hex(s, "footer_sha256", source=source, prefix=p, empty=True)
        rg = s.get("row_group_rows", [])
        if not isinstance(rg, list) or any(
            isinstance(x, bool) or not isinstance(x, int) for x in rg
        ):
            raise DataError(f"{_where(source, p + 'row_group_rows')} must be a list of integers")
        if rg and (len(rg) != groups or sum(rg) != rows):
            raise DataError(
                f"{_where(source, p + 'row_group_rows')} has {len(rg)} groups of {sum(rg)} rows"
                f", but row_groups is {groups} and rows {rows}"
            )
        rows_total += rows
    if rows_total != num_frames or split_frames != num_frames:
        raise DataError(
            f"{source}: frame count num_frames={num_frames} differs from the rows of the shards"
            f" ({rows_total}) or the frames of the splits ({split_frames})"
        )
    if split_videos != num_videos:
        raise DataError(
            f"{source}: video count num_videos={num_videos} differs from the videos of the"
            f" splits ({split_videos})"
        )
