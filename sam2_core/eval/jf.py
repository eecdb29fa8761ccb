"""J&F over folders of masks, computed exactly as the official SA-V / DAVIS evaluator does.

Layouts (detected per video, like the official tool):

* SA-V: ``<root>/<video>/<obj>/<frame>.png``, one binary PNG per object and frame (at most two
  distinct values; anything > 0 is the object). Each object is scored on its own.
* DAVIS / MOSE: ``<root>/<video>/<frame>.png``, one label PNG per frame (palette index = object).

Protocol: the frames scored are the GT frames (sorted by name) minus the first and the last one
unless ``skip_first_and_last=False``; prediction frames without GT are ignored; a frame only
counts for an object once the object has appeared in the GT or the prediction of an evaluated
frame; per-object J/F are the means over counted frames (x100); only objects present in the GT
are reported; the global J and F are means over all reported objects of all videos, J&F their
mean. See :mod:`sam2_core.eval.boundary` for the per-frame definitions.

Deviation: where the official tool stops with an assertion (an SA-V object that is empty on
every evaluated GT frame), the object is left out and a warning is recorded.
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sam2_core.data.readers.records import DataError
from sam2_core.eval.boundary import frame_scores, tolerance_radius
from sam2_core.eval.csv_cells import csv_text, guard_text

log = logging.getLogger(__name__)

Missing = Literal["error", "empty"]
Layout = Literal["sav", "davis"]


# ----------------------------------------------------------------------------- per sequence


@dataclass
class ObjectScores:
    """Scores of one object of one video.

    ``J``/``F`` hold one value in [0, 1] per counted frame (``counted_frames``).
    """

    video: str
    obj: str
    evaluated_frames: list[str] = field(default_factory=list)
    counted_frames: list[str] = field(default_factory=list)
    J: list[float] = field(default_factory=list)
    F: list[float] = field(default_factory=list)

    @property
    def j_mean(self) -> float:
        """Mean J over counted frames, x100."""
        return float(np.mean(self.J)) * 100 if self.J else float("nan")

    @property
    def f_mean(self) -> float:
        return float(np.mean(self.F)) * 100 if self.F else float("nan")

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "obj": self.obj,
            "J": self.j_mean,
            "F": self.f_mean,
            "J&F": self.jf_mean,
            "evaluated_frames": self.evaluated_frames,
            "counted_frames": self.counted_frames,
            "J_per_frame": self.J,
            "F_per_frame": self.F,
        }


def _labels(arr: np.ndarray) -> set[int]:
    """Non-zero labels of a label map (bincount: much cheaper than np.unique on big frames)."""
    if arr.dtype == bool:
        return {1} if arr.any() else set()
    if arr.dtype in (np.uint8, np.uint16):
        counts = np.bincount(arr.ravel(), minlength=1)
        return {int(v) for v in np.flatnonzero(counts) if v != 0}
    return {int(v) for v in np.unique(arr) if v != 0}


class SequenceScorer:
    """Accumulates per-object scores over the evaluated frames of one sequence.

    Feed label maps frame by frame (``bool [H, W]`` for one SA-V object, integer ``[H, W]``
    for a DAVIS frame). Objects enter once seen in the GT or the prediction of a fed frame.
    """

    def __init__(self, video: str, *, obj_name: str | None = None) -> None:
        self.video = video
        self._obj_name = obj_name  # fixed name of the single object of a binary sequence
        self._in_gt: set[int] = set()
        self._in_pred: set[int] = set()
        self._scores: dict[int, ObjectScores] = {}
        self._frames: list[str] = []

    def feed(self, frame: str, gt: np.ndarray, pred: np.ndarray) -> None:
        """Score one frame; ``gt``/``pred`` are ``[H, W]`` label maps of equal shape."""
        self._frames.append(frame)
        self._in_gt |= _labels(gt)
        self._in_pred |= _labels(pred)
        radius = tolerance_radius(pred.shape)
        binary = gt.dtype == bool and pred.dtype == bool
        for label in sorted(self._in_gt | self._in_pred):
            g = gt if binary else gt == label
            p = pred if binary else pred == label
            j, f = frame_scores(p, g, radius)
            s = self._scores.get(label)
            if s is None:
                name = self._obj_name if self._obj_name is not None else f"{label:03}"
                s = self._scores[label] = ObjectScores(self.video, name)
            s.counted_frames.append(frame)
            s.J.append(j)
            s.F.append(f)

    def results(self) -> list[ObjectScores]:
        """Scores of the objects present in the GT, sorted by label."""
        out = []
        for label in sorted(self._in_gt):
            s = self._scores[label]
            s.evaluated_frames = list(self._frames)
            out.append(s)
        return out


def frames_to_evaluate(frames: Sequence[str], skip_first_and_last: bool) -> list[str]:
    """Sorted GT frame names, minus the first and the last when asked (official protocol)."""
    ordered = sorted(frames)
    return ordered[1:-1] if skip_first_and_last else ordered


# ----------------------------------------------------------------------------- reading PNGs

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_label_png(path: str) -> np.ndarray:
    """A mask PNG as the official tool sees it (``np.array(PIL.Image.open(path))``), ``[H, W]``.

    Grayscale PNGs are decoded with OpenCV (same values, faster); palette and other colour types
    go through PIL so that palette PNGs keep their indices.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read mask ({e})") from e
    if data[:8] != _PNG_SIGNATURE or len(data) < 33:
        raise DataError(f"{path}: not a PNG file")
    color_type = data[25]
    arr: np.ndarray | None = None
    if color_type == 0:  # grayscale, no alpha
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            arr = np.array(im)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a single-channel mask PNG, got shape {arr.shape}")
    return arr


def _binary(arr: np.ndarray, path: str) -> np.ndarray:
    """SA-V rule: at most two distinct values per PNG, anything > 0 is the object."""
    if len(_labels(arr) | {0}) > 2:
        raise DataError(
            f"{path}: more than one object in the PNG; the SA-V layout needs one object per PNG"
        )
    return arr > 0


def _list_pngs(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".png"))


def _list_dirs(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))


def detect_layout(video_dir: str) -> Layout:
    """``"davis"`` when every entry of the GT video folder is a PNG, else ``"sav"``."""
    entries = os.listdir(video_dir)
    return "davis" if all(n.endswith(".png") for n in entries) else "sav"


# ----------------------------------------------------------------------------- per video


@dataclass
class VideoScores:
    video: str
    layout: Layout
    objects: list[ObjectScores]
    missing_frames: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _VideoJob:
    gt_root: str
    pred_root: str
    skip_first_and_last: bool
    missing: Missing

    def __call__(self, video: str) -> VideoScores:
        return score_video_dir(
            os.path.join(self.gt_root, video),
            os.path.join(self.pred_root, video),
            video=video,
            skip_first_and_last=self.skip_first_and_last,
            missing=self.missing,
        )


def _pair(
    gt_path: str, pred_path: str, missing: Missing, missing_list: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    gt = read_label_png(gt_path)
    if os.path.exists(pred_path):
        pred = read_label_png(pred_path)
    elif missing == "empty":
        missing_list.append(pred_path)
        pred = np.zeros(gt.shape, dtype=gt.dtype)
    else:
        raise DataError(
            f"{pred_path}: prediction missing for GT frame {gt_path} "
            "(every GT frame needs a prediction; use missing='empty' to score it as empty)"
        )
    if gt.shape != pred.shape:
        raise DataError(f"shape mismatch: {gt_path} {gt.shape} vs {pred_path} {pred.shape}")
    return gt, pred


def score_video_dir(
    gt_dir: str,
    pred_dir: str,
    *,
    video: str,
    skip_first_and_last: bool = True,
    missing: Missing = "error",
) -> VideoScores:
    """Score one video folder pair (either layout)."""
    layout = detect_layout(gt_dir)
    missing_list: list[str] = []
    warnings: list[str] = []
    objects: list[ObjectScores] = []
    if layout == "davis":
        scorer = SequenceScorer(video)
        for frame in frames_to_evaluate(_list_pngs(gt_dir), skip_first_and_last):
            gt, pred = _pair(
                os.path.join(gt_dir, frame), os.path.join(pred_dir, frame), missing, missing_list
            )
            scorer.feed(frame, gt, pred)
        objects = scorer.results()
    else:
        for obj in _list_dirs(gt_dir):
            obj_gt, obj_pred = os.path.join(gt_dir, obj), os.path.join(pred_dir, obj)
            scorer = SequenceScorer(video, obj_name=obj)
            for frame in frames_to_evaluate(_list_pngs(obj_gt), skip_first_and_last):
                gp, pp = os.path.join(obj_gt, frame), os.path.join(obj_pred, frame)
                gt, pred = _pair(gp, pp, missing, missing_list)
                scorer.feed(frame, _binary(gt, gp), _binary(pred, pp))
            found = scorer.results()
            if not found:
                warnings.append(
                    f"{video}/{obj}: object empty on every evaluated GT frame; not scored "
                    "(the official evaluator stops with an assertion here)"
                )
            objects.extend(found)
    return VideoScores(video, layout, objects, missing_list, warnings)


# ----------------------------------------------------------------------------- dataset result


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass
class JFResult:
    """Scores of a whole prediction set (global, per video, per object, per frame)."""

    videos: list[VideoScores]
    skip_first_and_last: bool = True

    @property
    def objects(self) -> list[ObjectScores]:
        return [o for v in self.videos for o in v.objects]

    @property
    def J(self) -> float:
        """Global J x100: mean over all objects of all videos."""
        vals = [o.j_mean for o in self.objects]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def F(self) -> float:
        vals = [o.f_mean for o in self.objects]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2

    @property
    def warnings(self) -> list[str]:
        return [w for v in self.videos for w in v.warnings]

    @property
    def missing_frames(self) -> list[str]:
        return [m for v in self.videos for m in v.missing_frames]

    def per_object(self) -> dict[str, dict[str, dict[str, float]]]:
        out: dict[str, dict[str, dict[str, float]]] = {}
        for o in self.objects:
            out.setdefault(o.video, {})[o.obj] = {"J": o.j_mean, "F": o.f_mean, "J&F": o.jf_mean}
        return out

    def per_video(self) -> list[dict[str, Any]]:
        """One row per video: mean over its objects (x100), object and frame counts."""
        rows = []
        for v in self.videos:
            j = float(np.mean([o.j_mean for o in v.objects])) if v.objects else float("nan")
            f = float(np.mean([o.f_mean for o in v.objects])) if v.objects else float("nan")
            rows.append(
                {
                    "video": v.video,
                    "num_objects": len(v.objects),
                    "num_frames": max((len(o.evaluated_frames) for o in v.objects), default=0),
                    "J&F": (j + f) / 2,
                    "J": j,
                    "F": f,
                    "layout": v.layout,
                }
            )
        return rows

    def results_csv(self) -> str:
        """The official ``results.csv`` text (same header, padding and rounding).

        Written through :mod:`csv` (names with commas or quotes are quoted) and with names
        that a spreadsheet would run as formulas prefixed by ``'`` (see
        :mod:`sam2_core.eval.csv_cells`); ordinary names give the official bytes.
        """
        names = [guard_text(v.video) for v in self.videos if v.objects]
        width = max([len(n) for n in names] + [len("Global score")])
        rows = [
            [f"{'sequence':<{width}}", f"{'obj':>3}", f" {'J&F':>4}", f" {'J':>4}", f" {'F':>4}"],
            [
                f"{'Global score':<{width}}",
                f"{'':>3}",
                f" {self.JF:.1f}",
                f" {self.J:.1f}",
                f" {self.F:.1f}",
            ],
        ]
        for o in self.objects:
            rows.append(
                [
                    f"{guard_text(o.video):<{width}}",
                    f"{guard_text(o.obj):03}",
                    f" {o.jf_mean:>4.1f}",
                    f" {o.j_mean:>4.1f}",
                    f" {o.f_mean:>4.1f}",
                ]
            )
        return csv_text(rows)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: global scores, counts, protocol, per-object scores."""
        return {
            "J&F": _nan_to_none(self.JF),
            "J": _nan_to_none(self.J),
            "F": _nan_to_none(self.F),
            "num_videos": len(self.videos),
            "num_objects": len(self.objects),
            "skip_first_and_last": self.skip_first_and_last,
            "missing_frames_scored_as_empty": len(self.missing_frames),
            "warnings": self.warnings,
            "per_object": {
                vid: {k: {m: _nan_to_none(x) for m, x in d.items()} for k, d in objs.items()}
                for vid, objs in self.per_object().items()
            },
        }

    def per_video_csv(self) -> str:
        """``per_video.csv``: one row per video (names guarded as in :meth:`results_csv`)."""
        cols = ["video", "num_objects", "num_frames", "J&F", "J", "F", "layout"]
        rows: list[list[str]] = [cols]
        for row in self.per_video():
            rows.append(
                [
                    f"{v:.4f}"
                    if isinstance(v, float)
                    else guard_text(v)
                    if isinstance(v, str)
                    else str(v)
                    for v in (row[c] for c in cols)
                ]
            )
        return csv_text(rows)

    def per_frame_json(self) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self.objects]

    def write(self, out_dir: str, *, per_frame: bool = True) -> dict[str, str]:
        """Write ``results.csv``, ``summary.json``, ``per_video.csv`` (and ``per_frame.json``)."""
        from sam2_core.storage import join, write_json_atomic, write_text_atomic

        paths = {
            "results_csv": join(out_dir, "results.csv"),
            "summary_json": join(out_dir, "summary.json"),
            "per_video_csv": join(out_dir, "per_video.csv"),
        }
        write_text_atomic(paths["results_csv"], self.results_csv())
        write_text_atomic(paths["per_video_csv"], self.per_video_csv())
        if per_frame:
            paths["per_frame_json"] = join(out_dir, "per_frame.json")
            write_json_atomic(paths["per_frame_json"], self.per_frame_json(), indent=None)
        # summary.json last: its presence means the others are complete.
        write_json_atomic(paths["summary_json"], self.summary())
        return paths


# ----------------------------------------------------------------------------- entry point


def list_videos(gt_dir: str, pred_dir: str, *, strict: bool = True) -> list[str]:
    """Video folders to score: all GT videos (``strict``) or those present in both roots."""
    for root, what in ((gt_dir, "GT"), (pred_dir, "prediction")):
        if not os.path.isdir(root):
            raise DataError(f"{root}: {what} folder does not exist")
    gt_videos = set(_list_dirs(gt_dir))
    pred_videos = set(_list_dirs(pred_dir))
    if not strict:
        return sorted(gt_videos & pred_videos)
    problems = []
    if gt_videos - pred_videos:
        problems.append(
            f"videos in {gt_dir} but not in {pred_dir}: {sorted(gt_videos - pred_videos)}"
        )
    if pred_videos - gt_videos:
        problems.append(
            f"videos in {pred_dir} but not in {gt_dir}: {sorted(pred_videos - gt_videos)}"
        )
    if problems:
        raise DataError("; ".join(problems) + " (use strict=False to score the common videos)")
    return sorted(gt_videos)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core: no nested threading


def _map_videos(
    job: Callable[[str], VideoScores], videos: list[str], num_workers: int, progress: bool
) -> Iterator[VideoScores]:
    it: Iterable[VideoScores]
    if num_workers > 1 and len(videos) > 1:
        # spawn: callers often have torch (and its thread pools) loaded; fork is not safe then.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(num_workers, len(videos)), initializer=_init_worker) as pool:
            it = pool.imap(job, videos)
            yield from _progress(it, len(videos), progress)
    else:
        yield from _progress(map(job, videos), len(videos), progress)


def _progress(it: Iterable[VideoScores], total: int, enabled: bool) -> Iterator[VideoScores]:
    if not enabled:
        yield from it
        return
    from tqdm import tqdm

    yield from tqdm(it, total=total, desc="J&F", unit="video")


def evaluate_predictions(
    *,
    gt_dir: str,
    pred_dir: str,
    skip_first_and_last: bool = True,
    num_workers: int = 0,
    strict: bool = True,
    missing: Missing = "error",
    progress: bool = False,
) -> JFResult:
    """Score a prediction folder against a GT folder (SA-V or DAVIS layout, per video).

    Args:
        gt_dir, pred_dir: local roots holding one folder per video.
        skip_first_and_last: skip the first and last GT frame of each sequence (standard
            semi-supervised protocol; the official ``--do_not_skip_first_and_last_frame`` is
            ``False`` here).
        num_workers: processes over videos (0 or 1: in this process).
        strict: every GT video needs a prediction folder and vice versa.
        missing: ``"error"`` (official) or ``"empty"`` (score missing prediction PNGs as empty
            masks; they are listed in the result).
    """
    videos = list_videos(gt_dir, pred_dir, strict=strict)
    job = _VideoJob(gt_dir, pred_dir, skip_first_and_last, missing)
    scored = list(_map_videos(job, videos, num_workers, progress))
    result = JFResult(scored, skip_first_and_last=skip_first_and_last)
    for w in result.warnings:
        log.warning(w)
    return result


def load_summary(path: str) -> dict[str, Any]:
    """Read a ``summary.json`` written by :meth:`JFResult.write`."""
    with open(path) as f:
        data: dict[str, Any] = json.load(f)
    return data


def video_scores_from_json(d: dict[str, Any]) -> VideoScores:
    """The inverse of a video's JSON record (``_progress/<video>.json``, ``per_video``)."""
    objs = [
        ObjectScores(
            o["video"],
            o["obj"],
            list(o["evaluated_frames"]),
            list(o["counted_frames"]),
            [float(x) for x in o["J_per_frame"]],
            [float(x) for x in o["F_per_frame"]],
        )
        for o in d["objects"]
    ]
    return VideoScores(d["video"], d["layout"], objs, [], list(d.get("warnings", [])))
