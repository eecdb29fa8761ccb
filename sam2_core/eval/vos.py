"""Semi-supervised VOS inference over a dataset, scored with the official J&F protocol.

For every video: the ground-truth masks of the first annotated frame are the prompts (option
``prompt="appear"``: every object is prompted on the first annotated frame where it is visible,
and tracked from there on, like the official ``--track_object_appearing_later_in_video``); the
video predictor propagates through *all* frames (SA-V val: 24 fps images, 6 fps annotations);
logits are thresholded at 0; annotated frames are written in the official layouts and scored.

Outputs under ``out``::

    predictions/<video>/<obj:03d>/<frame:05d>.png   (SA-V layout)  or
    predictions/<video>/<frame:05d>.png             (DAVIS layout, palette, no overlaps)
    _progress/<video>.json     per-video scores, written last for the video (resume marker),
                               with the run's fingerprint (weights + settings)
    results.csv  summary.json  per_video.csv  per_frame.json  report.html

Frames before an object's prompt frame are predicted empty. With the model's
:class:`~sam2_core.model.predictor.VideoPredictor` a video takes one pass: every frame is
decoded and encoded once, objects prompted on the same frame are tracked as one batch, and each
object only from its prompt frame on (as separate runs per prompt frame would). With
``max_objects_per_batch`` (or another predictor) objects go in separate runs of at most that
many, one run per prompt frame and batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sam2_core.data.readers.records import DataError, VideoRecord, check_video_id
from sam2_core.eval.fingerprint import (
    FINGERPRINT_KEY,
    SETTINGS_KEY,
    differences,
    evaluation_settings,
    fingerprint,
)
from sam2_core.eval.jf import (
    JFResult,
    ObjectScores,
    SequenceScorer,
    VideoScores,
    frames_to_evaluate,
    video_scores_from_json,
)
from sam2_core.eval.layouts import (
    PredLayout,
    compose_labels,
    frame_file,
    write_davis_frame,
    write_sav_frame,
)

log = logging.getLogger(__name__)

Prompt = Literal["first", "appear"]
ResumeMode = Literal["auto", "strict", "off"]
RESUME_MODES: tuple[ResumeMode, ...] = ("auto", "strict", "off")
PROGRESS_DIR = "_progress"
PRED_DIR = "predictions"


# ----------------------------------------------------------------------------- model / device


def autocast_for(device: Any) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (as the official inference), nothing (fp32) on CPU."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: Models with inputs up to this size run with one intra-op thread on the CPU (see below).
SMALL_MODEL_IMAGE_SIZE = 512


def auto_num_threads(model: Any, device: Any) -> int | None:
    """Intra-op threads for inference: 1 for small models on the CPU, else None (unchanged).

    A small model's ops take microseconds, so thread fork/join dominates; on a shared machine
    a busy core makes every op wait for it (measured here: tiny model, 2 threads on 2 loaded
    cores, 52 s CPU and 1.5-3 min for the demo set; 1 thread, 4 s). An explicit
    ``OMP_NUM_THREADS`` in the environment always wins.
    """
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    size = getattr(model, "image_size", None)
    return 1 if size is not None and int(size) <= SMALL_MODEL_IMAGE_SIZE else None


@contextlib.contextmanager
def intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(num_threads)`` for the duration (None: leave as is)."""
    import torch

    saved = torch.get_num_threads()
    if num_threads is not None and num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


def infer_model_name(checkpoint: str) -> str:
    """The model config whose state-dict keys and shapes equal those of ``checkpoint``."""
    import torch

    from sam2_core.model.build import MODEL_NAMES, build_model, guess_model_name, read_state_dict

    guessed = guess_model_name(checkpoint)
    if guessed is not None:
        return guessed
    state = read_state_dict(checkpoint)
    want = {k: tuple(v.shape) for k, v in state.items()}
    for name in MODEL_NAMES:
        with torch.device("meta"):
            model = build_model(name, device="meta")
        have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if have == want:
            return name
    raise ValueError(
        f"{checkpoint}: its keys/shapes match none of {', '.join(MODEL_NAMES)}; "
        "pass the model name (--model-name) explicitly"
    )


def load_model(
    model: Any, *, checkpoint: str | None = None, device: Any, model_name: str | None = None
) -> Any:
    """An ``nn.Module`` from a module, a model name / YAML path, or a checkpoint path."""
    from torch import nn

    from sam2_core.model.build import MODEL_NAMES, build_model

    if isinstance(model, nn.Module):
        return model.to(device)
    spec = str(model)
    if spec in MODEL_NAMES or spec.endswith((".yaml", ".yml")):
        if checkpoint is None:
            # Random weights: seed them so repeated evaluations give the same numbers.
            log.warning("model %s has no checkpoint: evaluating seeded random weights", spec)
            return build_model(spec, device=str(device), init_seed=0)
        return build_model(spec, checkpoint=checkpoint, device=str(device))
    if checkpoint is not None:
        raise ValueError(f"model {spec!r} is not a model name, and a checkpoint is also given")
    from sam2_core.model.released import lookup

    release = lookup(spec)  # `--model sam2.1_hiera_tiny`: a released checkpoint by name
    if release is not None:
        return build_model(model_name or release.model, checkpoint=spec, device=str(device))
    name = model_name or infer_model_name(spec)
    log.info("checkpoint %s: model config %s", spec, name)
    return build_model(name, checkpoint=spec, device=str(device))


def make_predictor(model: Any, predictor_cls: Callable[..., Any] | None = None, **kw: Any) -> Any:
    """``VideoPredictor(model, **kw)`` (or a class with the same interface)."""
    if predictor_cls is None:
        from sam2_core.model.predictor import VideoPredictor

        predictor_cls = VideoPredictor
    return predictor_cls(model, **kw)


# ----------------------------------------------------------------------------- one video


def prompt_plan(record: VideoRecord, prompt: Prompt = "first") -> dict[int, list[int]]:
    """``{frame_index: [obj_id, ...]}``: on which annotated frame each object gets its mask."""
    if not record.annotated_indices:
        raise DataError(f"{record.source or record.video_id}: video has no annotated frame")
    plan: dict[int, list[int]] = {}
    first = record.annotated_indices[0]
    for obj in record.obj_ids:
        frames = [first] if prompt == "first" else record.annotated_indices
        for f in frames:
            if record.mask(obj, f).any():
                plan.setdefault(f, []).append(obj)
                break
    return dict(sorted(plan.items()))


def _batches(ids: list[int], size: int | None) -> Iterator[list[int]]:
    step = size if size and size > 0 else max(len(ids), 1)
    for i in range(0, len(ids), step):
        yield ids[i : i + step]


@dataclass
class FrameOutput:
    """Predicted logits of some objects on one frame: ``logits float32 [O, H, W]``."""

    frame_index: int
    obj_ids: list[int]
    logits: np.ndarray


def propagate_video(
    predictor: Any,
    record: VideoRecord,
    *,
    prompt: Prompt = "first",
    max_objects_per_batch: int | None = None,
    device: Any = None,
    state: Any = None,
    one_pass: bool = True,
) -> Iterator[FrameOutput]:
    """Run the predictor over a video; yields every propagated frame of every object batch.

    Batches are ordered by prompt frame; within a batch frames come in increasing order. With
    ``one_pass`` (and a ``VideoPredictor``, no ``max_objects_per_batch``) there is a single
    batch of all objects, where objects not yet prompted have ``NO_OBJ_SCORE`` logits.
    """
    import torch

    pos = {f: i for i, f in enumerate(record.frame_indices)}
    missing = [f for f in record.annotated_indices if f not in pos]
    if missing:
        raise DataError(
            f"{record.source or record.video_id}: annotated frames {missing} have no image"
        )
    plan = prompt_plan(record, prompt)
    if not plan:
        return
    device = device or torch.device("cpu")
    with torch.inference_mode(), autocast_for(device):
        if state is None:
            state = predictor.init_state(record)
        if one_pass and not max_objects_per_batch and _is_video_predictor(predictor):
            predictor.reset_state(state)
            for frame, objs in plan.items():
                for obj in objs:
                    mask = record.mask(obj, frame)
                    predictor.add_new_mask(state, frame_idx=pos[frame], obj_id=obj, mask=mask)
            for fi, obj_ids, masks in predictor.propagate_in_video(
                state, start_frame_idx=pos[next(iter(plan))], from_first_prompt=True
            ):
                logits = masks[:, 0].float().cpu().numpy()
                yield FrameOutput(record.frame_indices[fi], [int(o) for o in obj_ids], logits)
            return
        for frame, objs in plan.items():
            for batch in _batches(objs, max_objects_per_batch):
                predictor.reset_state(state)
                for obj in batch:
                    mask = record.mask(obj, frame)
                    predictor.add_new_mask(state, frame_idx=pos[frame], obj_id=obj, mask=mask)
                for fi, obj_ids, masks in predictor.propagate_in_video(
                    state, start_frame_idx=pos[frame]
                ):
                    logits = masks[:, 0].float().cpu().numpy()
                    yield FrameOutput(record.frame_indices[fi], [int(o) for o in obj_ids], logits)


def _is_video_predictor(predictor: Any) -> bool:
    from sam2_core.model.predictor import VideoPredictor

    return isinstance(predictor, VideoPredictor)


class _VideoSink:
    """Collects predictions of one video, writes PNGs and feeds the scorers.

    SA-V layout: each object is written and scored as soon as its frames arrive (an object
    belongs to exactly one batch, whose frames arrive in order). DAVIS layout: a running
    per-frame label map keeps, per pixel, the object with the highest positive logit.
    """

    def __init__(
        self,
        record: VideoRecord,
        *,
        layout: PredLayout,
        pred_root: str | None,
        skip_first_and_last: bool,
        write_all_frames: bool,
    ) -> None:
        self.rec = record
        self.layout = layout
        self.root = pred_root
        self.write_all = write_all_frames
        ann = record.annotated_indices
        names = [frame_file(f) for f in ann]
        self.eval_names = frames_to_evaluate(names, skip_first_and_last)
        self.annotated = set(ann)
        h, w = record.height, record.width
        self.labels: dict[int, np.ndarray] = {}
        self.best: dict[int, np.ndarray] = {}
        if layout == "davis":
            for f in ann:
                self.labels[f] = np.zeros((h, w), np.uint8)
                self.best[f] = np.zeros((h, w), np.float32)
        self.scorers = {
            o: SequenceScorer(record.video_id, obj_name=f"{o:03d}") for o in record.obj_ids
        }
        self._next: dict[int, int] = {o: 0 for o in record.obj_ids}  # next annotated frame

    def _feed_obj(self, obj: int, frame: int, pred: np.ndarray) -> None:
        """Score/write one object frame; fills skipped annotated frames with empty masks."""
        ann = self.rec.annotated_indices
        empty = np.zeros((self.rec.height, self.rec.width), bool)
        while self._next[obj] < len(ann) and ann[self._next[obj]] <= frame:
            f = ann[self._next[obj]]
            p = pred if f == frame else empty
            if self.root is not None and self.layout == "sav":
                write_sav_frame(self.root, self.rec.video_id, f, {obj: p})
            if frame_file(f) in self.eval_names:
                self.scorers[obj].feed(frame_file(f), self.rec.mask(obj, f), p)
            self._next[obj] += 1

    def add(self, out: FrameOutput) -> None:
        f = out.frame_index
        if f not in self.annotated:
            if self.write_all and self.root is not None and self.layout == "sav":
                masks = {o: out.logits[i] > 0 for i, o in enumerate(out.obj_ids)}
                write_sav_frame(self.root, self.rec.video_id, f, masks)
            return
        for i, obj in enumerate(out.obj_ids):
            if self.layout == "sav":
                if obj in self.scorers:
                    self._feed_obj(obj, f, out.logits[i] > 0)
            else:
                lg = out.logits[i]
                win = (lg > 0) & (lg > self.best[f])
                self.labels[f][win] = obj
                self.best[f][win] = lg[win]

    def finish(self) -> VideoScores:
        rec = self.rec
        if self.layout == "sav":
            last = rec.annotated_indices[-1] if rec.annotated_indices else -1
            for obj in rec.obj_ids:  # objects never prompted, and trailing frames
                if self._next[obj] < len(rec.annotated_indices):
                    self._feed_obj(obj, last, np.zeros((rec.height, rec.width), bool))
            objects: list[ObjectScores] = []
            warnings = []
            for obj in rec.obj_ids:
                found = self.scorers[obj].results()
                if not found:
                    warnings.append(f"{rec.video_id}/{obj:03d}: empty on every evaluated frame")
                objects.extend(found)
            return VideoScores(rec.video_id, "sav", objects, [], warnings)
        scorer = SequenceScorer(rec.video_id)
        for f in rec.annotated_indices:
            if self.root is not None:
                write_davis_frame(self.root, rec.video_id, f, self.labels[f])
            if frame_file(f) in self.eval_names:
                gt = {o: rec.mask(o, f) for o in rec.obj_ids}
                scorer.feed(frame_file(f), compose_labels(gt), self.labels[f])
        return VideoScores(rec.video_id, "davis", scorer.results(), [], [])


def predict_and_score_video(
    predictor: Any,
    record: VideoRecord,
    *,
    layout: PredLayout = "sav",
    pred_root: str | None = None,
    prompt: Prompt = "first",
    max_objects_per_batch: int | None = None,
    skip_first_and_last: bool = True,
    write_all_frames: bool = False,
    device: Any = None,
) -> VideoScores:
    """Predict one video, write its PNGs under ``pred_root`` (if given) and score it."""
    if layout == "davis" and any(not 0 < o < 256 for o in record.obj_ids):
        raise DataError(f"{record.video_id}: object ids must be 1..255 for the DAVIS layout")
    sink = _VideoSink(
        record,
        layout=layout,
        pred_root=pred_root,
        skip_first_and_last=skip_first_and_last,
        write_all_frames=write_all_frames,
    )
    for out in propagate_video(
        predictor,
        record,
        prompt=prompt,
        max_objects_per_batch=max_objects_per_batch,
        device=device,
    ):
        sink.add(out)
    return sink.finish()


# ----------------------------------------------------------------------------- datasets


def _records(
    data: str | Iterable[VideoRecord],
    *,
    fmt: str = "auto",
    split: str | None = None,
    videos: Sequence[str] | None = None,
    max_videos: int | None = None,
) -> Iterator[VideoRecord]:
    if isinstance(data, str):
        from sam2_core.data.readers.formats import iter_videos

        it: Iterable[VideoRecord] = iter_videos(data, fmt=fmt, split=split)
    else:
        it = data
    wanted = set(videos) if videos else None
    seen: set[str] = set()
    n = 0
    for rec in it:
        if wanted is not None and rec.video_id not in wanted:
            continue
        if max_videos is not None and n >= max_videos:
            return
        check_video_id(rec.video_id, source=rec.source)
        seen.add(rec.video_id)
        n += 1
        yield rec
    if wanted is not None and wanted - seen:
        # An id that is not in the data is a typo, not "nothing to evaluate".
        where = data if isinstance(data, str) else "the given records"
        split_note = f" (split {split})" if split else ""
        raise DataError(
            f"--videos {','.join(sorted(wanted - seen))}: not in {where}{split_note}; "
            "check the video ids (folder or video file names without extension)"
        )


def default_layout(data: str | Iterable[VideoRecord], fmt: str = "auto") -> PredLayout:
    """DAVIS layout for DAVIS/MOSE datasets, SA-V layout for everything else."""
    if isinstance(data, str):
        from sam2_core.data.readers.formats import detect_format

        if (detect_format(data) if fmt == "auto" else fmt) == "davis":
            return "davis"
    return "sav"


def _video_scores_to_json(v: VideoScores) -> dict[str, Any]:
    return {
        "video": v.video,
        "layout": v.layout,
        "warnings": v.warnings,
        "objects": [o.to_dict() for o in v.objects],
    }


class ResumeMismatchError(ValueError):
    """``resume="strict"``: the output folder holds results of other weights or settings."""


def resume_mode(resume: bool | str) -> ResumeMode:
    """``"auto"``/``"strict"``/``"off"`` from a mode name or a bool (True: auto, False: off)."""
    if resume is True:
        return "auto"
    if resume is False:
        return "off"
    for mode in RESUME_MODES:
        if resume == mode:
            return mode
    raise ValueError(f"resume {resume!r}: use one of {', '.join(RESUME_MODES)}")


def _read_marker(path: str) -> dict[str, Any] | None:
    """A progress marker's JSON, or None when it cannot be read (then the video is redone)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable progress marker (%s); evaluating the video again", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _marker_matches(data: dict[str, Any] | None, fp: str) -> bool:
    return data is not None and data.get(FINGERPRINT_KEY) == fp


def _refuse_foreign_markers(prog_root: str, out: str, fp: str, settings: dict[str, Any]) -> None:
    """``resume="strict"``: fail before any work if a marker was made by another run."""
    for name in sorted(os.listdir(prog_root)):
        if not name.endswith(".json"):
            continue
        data = _read_marker(os.path.join(prog_root, name))
        if not _marker_matches(data, fp):
            what = differences(data.get(SETTINGS_KEY) if data else None, settings)
            raise ResumeMismatchError(
                f"{out}: finished video {name[: -len('.json')]} was evaluated with other "
                f"weights or settings ({', '.join(what) or 'fingerprint'} differ); use another "
                "--out, or --resume auto to evaluate such videos again"
            )


def evaluate_model(
    *,
    model: Any,
    checkpoint: str | None = None,
    data: str | Iterable[VideoRecord],
    out: str,
    device: str = "auto",
    fmt: str = "auto",
    split: str | None = None,
    videos: Sequence[str] | None = None,
    max_videos: int | None = None,
    prompt: Prompt = "first",
    layout: PredLayout | Literal["auto"] = "auto",
    max_objects_per_batch: int | None = None,
    skip_first_and_last: bool = True,
    write_all_frames: bool = False,
    resume: bool | ResumeMode = "auto",
    report: bool = True,
    compare_dir: str | None = None,
    tensorboard_dir: str | None = None,
    model_name: str | None = None,
    predictor_cls: Callable[..., Any] | None = None,
    progress: bool = True,
    num_threads: int | Literal["auto"] | None = "auto",
    on_video_done: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Inference + J&F + report for a model on a dataset; returns the summary dict.

    Args:
        model: an ``nn.Module``, a model name (``sam2_core.model.build.MODEL_NAMES``), a YAML
            path, or a checkpoint path (its config is inferred from the keys, or ``model_name``).
        checkpoint: weights for a named model (``{"model": state_dict}`` file).
        data: dataset URL (any :func:`sam2_core.data.readers.formats.iter_videos` format) or records.
        out: local output folder (see the module docstring for its layout).
        prompt: ``"first"`` (first annotated frame) or ``"appear"`` (each object on the first
            annotated frame where it is visible).
        layout: prediction layout; ``"auto"``: DAVIS for DAVIS/MOSE data, SA-V otherwise.
        resume: ``"auto"`` (or True): reuse a video's ``_progress/<video>.json`` only when
            it carries this run's fingerprint (same weights, model and predictor settings,
            prompt, layout, skip_first_and_last, ...: :mod:`sam2_core.eval.fingerprint`);
            other videos are evaluated again. ``"strict"``: refuse (ResumeMismatchError,
            before any work) when the folder holds a marker with another fingerprint.
            ``"off"`` (or False): evaluate every video again.
        compare_dir: another run's output folder (or prediction folder) for a comparison report.
        num_threads: torch intra-op threads during inference (restored afterwards); ``"auto"``:
            :func:`auto_num_threads`; None: leave as is.
        on_video_done: called with the video id once a video's predictions and its progress
            marker are written (the remote mode uploads them right away).

    Returns ``{"J&F", "J", "F", "num_videos", "num_objects", ...}`` (x100 scores).

    ``out``, ``tensorboard_dir`` and ``compare_dir`` may also be object-store URLs (gs://,
    s3://): see :func:`_evaluate_remote`.
    """
    arguments = dict(locals())  # first statement: exactly the arguments
    from sam2_core import storage

    if not all(storage.is_local(u) for u in (out, tensorboard_dir, compare_dir) if u):
        return _evaluate_remote(arguments)
    from tqdm import tqdm

    from sam2_core.model.build import resolve_device

    mode = resume_mode(resume)
    dev = resolve_device(device)
    lay: PredLayout = default_layout(data, fmt) if layout == "auto" else layout
    pred_root = os.path.join(out, PRED_DIR)
    prog_root = os.path.join(out, PROGRESS_DIR)
    os.makedirs(prog_root, exist_ok=True)
    net = load_model(model, checkpoint=checkpoint, device=dev, model_name=model_name)
    was_training = bool(net.training)
    net.eval()
    predictor = make_predictor(net, predictor_cls)
    run_settings = evaluation_settings(
        model=net,
        predictor=predictor,
        settings={
            "data": data.rstrip("/") if isinstance(data, str) else "<records>",
            "fmt": fmt,
            "split": split,
            "device": dev.type,
            "prompt": prompt,
            "layout": lay,
            "max_objects_per_batch": max_objects_per_batch,
            "skip_first_and_last": skip_first_and_last,
            "write_all_frames": write_all_frames,
        },
    )
    fp = fingerprint(run_settings)
    if mode == "strict":
        _refuse_foreign_markers(prog_root, out, fp, run_settings)
    redone: list[str] = []
    records: dict[str, VideoRecord] = {}
    scored: list[VideoScores] = []
    threads = auto_num_threads(net, dev) if num_threads == "auto" else num_threads
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(intra_op_threads(threads))
        it = _records(data, fmt=fmt, split=split, videos=videos, max_videos=max_videos)
        for rec in tqdm(it, desc="VOS", unit="video", disable=not progress):
            records[rec.video_id] = rec
            marker = os.path.join(prog_root, f"{rec.video_id}.json")
            if os.path.exists(marker):
                if mode != "off":
                    done = _read_marker(marker)
                    if done is not None and _marker_matches(done, fp):
                        scored.append(video_scores_from_json(done))
                        continue
                    if not redone:
                        what = differences(done.get(SETTINGS_KEY) if done else None, run_settings)
                        log.warning(
                            "%s: finished videos were evaluated with other weights or settings"
                            " (%s differ); evaluating them again",
                            out,
                            ", ".join(what) or "fingerprint",
                        )
                    redone.append(rec.video_id)
                # The old marker must never vouch for the new (partial) predictions.
                os.remove(marker)
            shutil.rmtree(os.path.join(pred_root, rec.video_id), ignore_errors=True)
            vs = predict_and_score_video(
                predictor,
                rec,
                layout=lay,
                pred_root=pred_root,
                prompt=prompt,
                max_objects_per_batch=max_objects_per_batch,
                skip_first_and_last=skip_first_and_last,
                write_all_frames=write_all_frames,
                device=dev,
            )
            from sam2_core.storage import write_json_atomic

            done_json = {
                **_video_scores_to_json(vs),
                FINGERPRINT_KEY: fp,
                SETTINGS_KEY: run_settings,
            }
            write_json_atomic(marker, done_json, indent=None)
            scored.append(vs)
            if on_video_done is not None:
                on_video_done(rec.video_id)
    finally:
        stack.close()
        net.train(was_training)
    result = JFResult(scored, skip_first_and_last=skip_first_and_last)
    paths = result.write(out)
    summary = result.summary()
    summary.update(
        {
            "model": model if isinstance(model, str) else type(model).__name__,
            "checkpoint": checkpoint,
            "data": data if isinstance(data, str) else "<records>",
            "device": str(dev),
            "prompt": prompt,
            "layout": lay,
            "predictions": pred_root,
            "fingerprint": fp,
            "weights_sha256": run_settings["weights_sha256"],
            "videos_redone": redone,
        }
    )
    if report:
        from sam2_core.eval.report import RecordOverlaySource, write_report

        other = None
        if compare_dir:
            from sam2_core.eval.report import load_result_dir

            other = load_result_dir(compare_dir)
        paths["report_html"] = write_report(
            os.path.join(out, "report.html"),
            result,
            pred_dir=pred_root,
            source=RecordOverlaySource(records),
            compare=other,
            compare_pred_dir=_compare_pred_dir(compare_dir),
            title=f"J&F: {summary['model']} on {summary['data']}",
        )
    if tensorboard_dir:
        from sam2_core.eval.report import log_tensorboard

        log_tensorboard(tensorboard_dir, result)
    summary["files"] = paths
    from sam2_core.storage import write_json_atomic

    write_json_atomic(os.path.join(out, "summary.json"), summary)
    return summary


def _evaluate_remote(kwargs: dict[str, Any]) -> dict[str, Any]:
    """:func:`evaluate_model` with object-store ``out`` / ``tensorboard_dir`` / ``compare_dir``.

    Evaluates into a local staging folder. Every finished video is uploaded at once, its
    predictions first and its ``_progress/<video>.json`` marker last, so an interrupted run
    (a preempted pod) keeps its finished videos; with ``resume`` a rerun downloads the markers
    and predictions of those videos and only evaluates the rest. The remaining outputs follow at
    the end with ``summary.json`` removed first and uploaded last (its presence means the rest
    is complete); a failed run never uploads a summary. A remote ``compare_dir`` is downloaded
    first, TensorBoard event files are mirrored to a remote ``tensorboard_dir``. Paths in the
    returned and uploaded summary point at ``out``.
    """
    import tempfile

    from sam2_core import storage
    from sam2_core.tb_mirror import TensorBoardMirror

    out = str(kwargs["out"])
    tb = TensorBoardMirror(kwargs["tensorboard_dir"]) if kwargs["tensorboard_dir"] else None
    uploaded: set[str] = set()  # relative paths already at `out`
    with contextlib.ExitStack() as stack:
        if tb is not None:
            stack.callback(tb.close)  # final upload of the event files, also after a failure
        compare = kwargs["compare_dir"]
        if compare and not storage.is_local(compare):
            local_cmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sam2kf-cmp-"))
            storage.download_dir(compare, local_cmp)
            compare = local_cmp
        local_out = stack.enter_context(
            storage.staged_dir(out, last=("summary.json",), skip=uploaded)
        )
        fetched: set[str] = set()
        if resume_mode(kwargs["resume"]) != "off":
            fetched = _download_finished_videos(out, local_out)
            uploaded.update(fetched)

        def upload_video(video_id: str) -> None:
            files = _video_files(local_out, video_id)
            marker = f"{PROGRESS_DIR}/{video_id}.json"
            if marker in fetched or resume_mode(kwargs["resume"]) == "off":
                # Evaluated again (other weights or settings): the old marker goes first, then
                # the old predictions (files the new run does not write must not stay behind).
                storage.remove(storage.join(out, marker), recursive=False)
                storage.remove(storage.join(out, PRED_DIR, video_id))
            for rel in [*files, marker]:  # the marker last: it vouches for the predictions
                with open(os.path.join(local_out, *rel.split("/")), "rb") as f:
                    storage.write_bytes_atomic(storage.join(out, rel), f.read())
                uploaded.add(rel)

        try:
            summary = evaluate_model(
                **{
                    **kwargs,
                    "out": local_out,
                    "compare_dir": compare,
                    "tensorboard_dir": tb.log_dir if tb else None,
                    "on_video_done": _chain(kwargs.get("on_video_done"), upload_video),
                }
            )
        except ResumeMismatchError as exc:  # name the folder the user gave, not the staging one
            raise ResumeMismatchError(str(exc).replace(local_out, out)) from None

        def rebase(v: Any) -> Any:
            if isinstance(v, str) and v.startswith(local_out):
                return storage.join(out, os.path.relpath(v, local_out).replace(os.sep, "/"))
            if isinstance(v, dict):
                return {k: rebase(x) for k, x in v.items()}
            return v

        summary = rebase(summary)
        storage.write_json_atomic(os.path.join(local_out, "summary.json"), summary)
    return summary


def _chain(
    first: Callable[[str], None] | None, second: Callable[[str], None]
) -> Callable[[str], None]:
    def both(video_id: str) -> None:
        if first is not None:
            first(video_id)
        second(video_id)

    return both


def _video_files(local_out: str, video_id: str) -> list[str]:
    """Relative paths of a video's prediction files in a local output folder."""
    root = os.path.join(local_out, PRED_DIR, video_id)
    rels = []
    for d, _dirs, files in os.walk(root):
        for name in files:
            rels.append(os.path.relpath(os.path.join(d, name), local_out).replace(os.sep, "/"))
    return sorted(rels)


def _download_finished_videos(out: str, local_out: str) -> set[str]:
    """Copy the progress markers of ``out`` and the predictions of those videos into the local
    staging folder (marker last); returns their relative paths. A video whose predictions
    cannot be read is left out, so it is evaluated again."""
    from sam2_core import storage

    fetched: set[str] = set()
    for name in storage.listdir(storage.join(out, PROGRESS_DIR)):
        if not name.endswith(".json"):
            continue
        video_id = name[: -len(".json")]
        pred_url = storage.join(out, PRED_DIR, video_id)
        local_pred = os.path.join(local_out, PRED_DIR, video_id)
        try:
            storage.download_dir(pred_url, local_pred)
            marker = storage.read_bytes(storage.join(out, PROGRESS_DIR, name))
        except OSError as exc:
            log.warning("%s: cannot resume video %s (%s); evaluating it again", out, video_id, exc)
            shutil.rmtree(local_pred, ignore_errors=True)
            continue
        os.makedirs(os.path.join(local_out, PROGRESS_DIR), exist_ok=True)
        with open(os.path.join(local_out, PROGRESS_DIR, name), "wb") as f:
            f.write(marker)
        fetched.update(_video_files(local_out, video_id))
        fetched.add(f"{PROGRESS_DIR}/{name}")
    return fetched


def _compare_pred_dir(compare_dir: str | None) -> str | None:
    if not compare_dir:
        return None
    sub = os.path.join(compare_dir, PRED_DIR)
    return sub if os.path.isdir(sub) else compare_dir


def validate_in_memory(
    model_module: Any,
    records: Iterable[VideoRecord],
    *,
    max_videos: int | None = None,
    device: Any = None,
    prompt: Prompt = "first",
    skip_first_and_last: bool = True,
    max_objects_per_batch: int | None = None,
    predictor_cls: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """J&F of a model on a few videos, all in memory (validation hook for the trainer).

    ``model_module`` is used as is (e.g. the DDP-unwrapped SAM2Base); it is put in eval mode
    for the duration and restored. Device defaults to the model's. Returns
    ``{"J&F", "J", "F", "num_videos", "num_objects", "per_video": {...}}`` (x100).
    """
    import torch

    if device is None:
        p = next(iter(model_module.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    from sam2_core.model.build import resolve_device

    dev = resolve_device(device)
    was_training = bool(model_module.training)
    model_module.eval()
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(intra_op_threads(auto_num_threads(model_module, dev)))
        predictor = make_predictor(model_module, predictor_cls)
        scored = [
            predict_and_score_video(
                predictor,
                rec,
                prompt=prompt,
                max_objects_per_batch=max_objects_per_batch,
                skip_first_and_last=skip_first_and_last,
                device=dev,
            )
            for rec in _records(records, max_videos=max_videos)
        ]
    finally:
        stack.close()
        model_module.train(was_training)
    result = JFResult(scored, skip_first_and_last=skip_first_and_last)
    summary = result.summary()
    summary.pop("per_object", None)
    summary["per_video"] = {row["video"]: row["J&F"] for row in result.per_video()}
    return summary
