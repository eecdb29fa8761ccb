"""Object masks of one frame decoded from COCO compressed RLE straight into bit-packed planes.

The transforms warp masks as bit-packed ``uint8`` planes (object ``o`` in bit ``o % 8`` of plane
``o // 8``). Decoding each object to a full ``H x W`` byte mask with pycocotools and packing them
afterwards writes every pixel once per object, twice; here the runs of all objects of a plane
are merged first (a few hundred boundaries) and the plane is written once with ``np.repeat``,
about 20x less work for typical masks.

COCO RLE runs are column-major, so the planes come out transposed: ``[W, H, P]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sam2_core.data.records import DataError


@dataclass(frozen=True)
class PackedMasks:
    """The masks ``[O, H, W]`` of one frame, bit-packed and transposed.

    Attributes:
        planes: uint8 ``[W, H, ceil(O/8)]`` (C-contiguous); bit ``o % 8`` of plane ``o // 8``
            at ``[x, y]`` is object ``o`` at pixel ``(y, x)``.
        nonempty: bool ``[O]``, whether each object has any pixel.
        height: H.
        width: W.
    """

    planes: np.ndarray
    nonempty: np.ndarray
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(O, H, W)``, like the unpacked bool stack."""
        return (int(self.nonempty.shape[0]), self.height, self.width)

    def unpack(self) -> np.ndarray:
        """bool ``[O, H, W]`` (tests and debugging)."""
        num, h, w = self.shape
        out = np.empty((num, h, w), dtype=bool)
        for o in range(num):
            out[o] = ((self.planes[:, :, o // 8] >> (o % 8)) & 1).T.astype(bool)
        return out


def rle_counts(counts: bytes, *, source: str = "") -> np.ndarray:
    """Run lengths (int64) of a COCO compressed RLE string (zeros first, then alternating).

    The format: each count is a little-endian sequence of 5-bit groups stored as
    ``chr(48 + group)`` with bit ``0x20`` meaning "more groups follow" and bit ``0x10`` of the
    last group the sign; counts from the third on are stored as differences to the count two
    places before. Parsed with array operations instead of a loop per character.
    """
    a = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.min() < 0 or a.max() > 63:
        raise DataError(f"{source or 'mask'}: RLE counts contain characters outside '0'..'o'")
    last = (a & 0x20) == 0
    if not last[-1]:
        raise DataError(f"{source or 'mask'}: RLE counts end in the middle of a number")
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    group = np.cumsum(last) - last  # which number each character belongs to
    k = np.arange(a.size) - starts[group]  # its 5-bit group within the number
    vals = np.add.reduceat((a & 0x1F) << (5 * k), starts)
    negative = (a[ends] & 0x10) != 0
    vals = np.where(negative, vals - (np.int64(1) << (5 * (ends - starts + 1))), vals)
    # Undo the delta coding: c[i] += c[i - 2] for i >= 3, i.e. a running sum per parity.
    vals[1::2] = np.cumsum(vals[1::2])
    vals[2::2] = np.cumsum(vals[2::2])
    return vals


def decode_packed(
    counts: Sequence[bytes | None], *, height: int, width: int, source: str = ""
) -> PackedMasks:
    """Pack the masks of ``O`` objects given as COCO compressed RLE count strings (``None``:
    the object has no mask on this frame) into :class:`PackedMasks`."""
    total = height * width
    num = len(counts)
    nonempty = np.zeros(num, dtype=bool)
    planes = np.empty((width, height, max(1, -(-num // 8))), dtype=np.uint8)
    for p in range(planes.shape[2]):
        bounds = [np.array([0, total], dtype=np.int64)]
        deltas = [np.zeros(2, dtype=np.int64)]
        for o in range(p * 8, min(num, p * 8 + 8)):
            c = counts[o]
            if c is None:
                continue
            runs = rle_counts(c, source=source)
            ends = np.cumsum(runs)
            if runs.size and (ends[-1] != total or runs.min() < 0):
                raise DataError(
                    f"{source or 'mask'}: RLE of object {o} covers {int(ends[-1])} pixels "
                    f"(or has a negative run), expected {height}x{width}={total}"
                )
            on, off = ends[0::2][: runs.size // 2], ends[1::2]
            nonempty[o] = bool(np.any(off > on))
            bit = 1 << (o % 8)
            bounds += [on, off]
            deltas += [np.full(on.size, bit, dtype=np.int64), np.full(off.size, -bit)]
        b = np.concatenate(bounds)
        order = np.argsort(b, kind="stable")
        b = b[order]
        value = np.cumsum(np.concatenate(deltas)[order])  # the plane's value after each boundary
        planes[:, :, p] = np.repeat(value[:-1].astype(np.uint8), np.diff(b)).reshape(width, height)
    return PackedMasks(planes=planes, nonempty=nonempty, height=height, width=width)
