"""Which frames and objects of a video make one training clip (Meta's RandomUniformSampler rule).

A clip is ``num_frames`` *consecutive annotated* frames starting at a uniform random position,
reversed in time with probability ``reverse_time_prob``, with up to ``max_num_objects`` objects
drawn among those visible (non-empty mask) on the clip's first frame (the last one in file order
when reversed).

Rules for videos that cannot give such a clip (documented, never a crash or an endless retry):

* fewer annotated frames than ``num_frames``: the video is left out of the epoch when the epoch
  plan is built, and counted (``short`` in the loader's skip counters, logged once).
* no object visible on the first frame of the drawn window: the other window starts are tried
  in a seeded random order (at most one pass over the video); when none has a visible object the
  sampler returns None and the loader substitutes another video deterministically, counting it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipChoice:
    """A sampled clip.

    Attributes:
        positions: ``T`` positions in the video's list of annotated frames, in clip order.
        obj_ids: the chosen object ids (1 to ``max_num_objects``).
        reversed: whether time runs backwards.
    """

    positions: list[int]
    obj_ids: list[int]
    reversed: bool


@dataclass(frozen=True)
class ClipSampler:
    """Window + object sampler with Meta's defaults (8 frames, 3 objects, no reversal)."""

    num_frames: int = 8
    max_num_objects: int = 3
    reverse_time_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.max_num_objects < 1:
            raise ValueError("num_frames and max_num_objects must be >= 1")
        if not 0.0 <= self.reverse_time_prob <= 1.0:
            raise ValueError("reverse_time_prob must be within [0, 1]")

    def usable(self, num_annotated: int) -> bool:
        """Whether a video with this many annotated frames can give a full clip."""
        return num_annotated >= self.num_frames

    def sample(
        self,
        *,
        num_annotated: int,
        visible: Callable[[int], Sequence[int]],
        rng: np.random.Generator,
    ) -> ClipChoice | None:
        """Draw a clip; ``visible(pos)`` lists object ids with a non-empty mask at ``pos``.

        Returns None when the video is too short or no window starts on a visible object.
        """
        if not self.usable(num_annotated):
            return None
        num_starts = num_annotated - self.num_frames + 1
        rev = bool(rng.random() < self.reverse_time_prob)
        first = int(rng.integers(num_starts))
        # The drawn start first, then every other start once, in a seeded order.
        others = [int(s) for s in rng.permutation(num_starts) if s != first]
        for start in [first, *others]:
            positions = list(range(start, start + self.num_frames))
            if rev:
                positions.reverse()
            ids = sorted(set(int(i) for i in visible(positions[0])))
            if ids:
                k = min(len(ids), self.max_num_objects)
                chosen = [int(i) for i in rng.choice(np.array(ids), size=k, replace=False)]
                return ClipChoice(positions=positions, obj_ids=chosen, reversed=rev)
        return None
