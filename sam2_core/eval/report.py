"""Self-contained HTML report of a J&F evaluation, plus KFP / TensorBoard metric exports.

The report holds the global scores, a sortable per-video table (a few lines of inline JS) and,
for the worst videos, strips of frames with the ground truth (green) and the prediction (red;
overlap yellow) overlaid; every image is embedded as base64 JPEG, so the file can be mailed or
stored as a KFP HTML artifact. In comparison mode (two prediction sets, e.g. champion and
challenger) the global scores sit side by side, the table gets per-video deltas and the strips
show both predictions.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from sam2_core.data.readers.records import VideoRecord
from sam2_core.eval.jf import (
    JFResult,
    ObjectScores,
    VideoScores,
    read_label_png,
    video_scores_from_json,
)

GT_COLOUR = (0, 200, 0)  # RGB
PRED_COLOUR = (230, 30, 30)
BOTH_COLOUR = (250, 220, 0)
TILE_WIDTH = 220


# ----------------------------------------------------------------------------- frame sources


class FrameSource(Protocol):
    """Gives frames and GT masks for overlays."""

    def image(self, video: str, frame: str, shape: tuple[int, int]) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` of a frame (``frame`` is a mask file name, e.g. 00004.png)."""
        ...

    def gt_mask(self, video: str, obj: str, frame: str) -> np.ndarray | None:
        """GT ``bool [H, W]`` of an object on a frame, or None if unknown."""
        ...


def _frame_index(frame: str) -> int:
    return int(os.path.splitext(frame)[0])


@dataclass
class RecordOverlaySource:
    """Frames and GT from in-memory :class:`VideoRecord`s (``evaluate_model``)."""

    records: Mapping[str, VideoRecord]

    def image(self, video: str, frame: str, shape: tuple[int, int]) -> np.ndarray:
        return self.records[video].image(_frame_index(frame))

    def gt_mask(self, video: str, obj: str, frame: str) -> np.ndarray | None:
        return self.records[video].mask(int(obj), _frame_index(frame))


@dataclass
class DirOverlaySource:
    """GT from a mask folder (either layout); frames from ``frames_dir/<video>/<stem>.jpg``."""

    gt_dir: str
    frames_dir: str | None = None

    def image(self, video: str, frame: str, shape: tuple[int, int]) -> np.ndarray:
        if self.frames_dir:
            stem = os.path.splitext(frame)[0]
            for ext in (".jpg", ".jpeg", ".png"):
                p = os.path.join(self.frames_dir, video, stem + ext)
                if os.path.exists(p):
                    bgr = cv2.imread(p, cv2.IMREAD_COLOR)
                    if bgr is not None:
                        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return np.full((*shape, 3), 60, np.uint8)  # no frames: neutral background

    def gt_mask(self, video: str, obj: str, frame: str) -> np.ndarray | None:
        return _read_obj_mask(os.path.join(self.gt_dir, video), obj, frame)


def _read_obj_mask(video_dir: str, obj: str, frame: str) -> np.ndarray | None:
    """An object's mask from either layout (None if the PNG does not exist)."""
    sav = os.path.join(video_dir, obj, frame)
    if os.path.exists(sav):
        return read_label_png(sav) > 0
    davis = os.path.join(video_dir, frame)
    if os.path.exists(davis):
        return read_label_png(davis) == int(obj)
    return None


# ----------------------------------------------------------------------------- images


def overlay(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` with GT (green), prediction (red) and overlap (yellow) tinted
    and outlined; ``gt``/``pred`` are ``bool [H, W]`` (None: not drawn)."""
    out = image.astype(np.float32)
    h, w = image.shape[:2]
    g = gt if gt is not None else np.zeros((h, w), bool)
    p = pred if pred is not None else np.zeros((h, w), bool)
    for region, colour in ((g & ~p, GT_COLOUR), (p & ~g, PRED_COLOUR), (g & p, BOTH_COLOUR)):
        out[region] = 0.45 * out[region] + 0.55 * np.asarray(colour, np.float32)
    res = out.clip(0, 255).astype(np.uint8)
    for m, colour in ((g, GT_COLOUR), (p, PRED_COLOUR)):
        if m.any():
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(res, contours, -1, colour, max(1, round(max(h, w) / 300)))
    return res


def _tile(img: np.ndarray, caption: str, width: int = TILE_WIDTH) -> np.ndarray:
    h, w = img.shape[:2]
    nh = max(1, round(h * width / w))
    small = cv2.resize(img, (width, nh), interpolation=cv2.INTER_AREA)
    bar = np.full((18, width, 3), 255, np.uint8)
    cv2.putText(bar, caption, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, small], axis=0)


def _hstack(tiles: Sequence[np.ndarray]) -> np.ndarray:
    h = max(t.shape[0] for t in tiles)
    pad = [np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0)), constant_values=255) for t in tiles]
    return np.concatenate(pad, axis=1)


def to_data_uri(rgb: np.ndarray, quality: int = 85) -> str:
    """``uint8 [H, W, 3]`` RGB -> ``data:image/jpeg;base64,...``."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _pick_frames(obj: ObjectScores, n: int) -> list[int]:
    """Indices into ``obj.counted_frames``: evenly spread, always including the worst frame."""
    k = len(obj.counted_frames)
    if k == 0:
        return []
    idx = set(np.linspace(0, k - 1, num=min(n, k)).round().astype(int).tolist())
    worst = int(np.argmin(np.asarray(obj.J) + np.asarray(obj.F)))
    if worst not in idx:
        idx.discard(min(idx, key=lambda i: abs(i - worst)))
        idx.add(worst)
    return sorted(idx)


def video_strip(
    obj: ObjectScores,
    *,
    source: FrameSource,
    pred_dirs: Sequence[str],
    labels: Sequence[str],
    row_scores: Sequence[ObjectScores | None] | None = None,
    num_frames: int = 6,
) -> str:
    """A data-URI JPEG: one row per prediction set, frames of ``obj`` with GT/pred overlays.

    ``row_scores`` gives each row's per-frame scores for the captions (default: ``obj`` for
    the first row, none for the others).
    """
    rows = []
    picks = _pick_frames(obj, num_frames)
    scores = list(row_scores) if row_scores is not None else [obj]
    scores += [None] * (len(pred_dirs) - len(scores))
    for pred_dir, label, sc in zip(pred_dirs, labels, scores):
        tiles = []
        for i in picks:
            frame = obj.counted_frames[i]
            gt = source.gt_mask(obj.video, obj.obj, frame)
            pred = _read_obj_mask(os.path.join(pred_dir, obj.video), obj.obj, frame)
            ref = gt if gt is not None else pred
            shape = ref.shape if ref is not None else (90, 160)
            img = source.image(obj.video, frame, (int(shape[0]), int(shape[1])))
            if gt is not None and img.shape[:2] != gt.shape:
                img = cv2.resize(img, (gt.shape[1], gt.shape[0]))
            caption = f"{label} {frame[:-4]}"
            if sc is not None and frame in sc.counted_frames:
                k = sc.counted_frames.index(frame)
                caption += f" J {sc.J[k]:.2f} F {sc.F[k]:.2f}"
            tiles.append(_tile(overlay(img, gt, pred), caption))
        if tiles:
            rows.append(_hstack(tiles))
    if not rows:
        return ""
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return to_data_uri(np.concatenate(rows, axis=0))


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px}
.cards{display:flex;gap:16px;flex-wrap:wrap}
.card{border:1px solid #ccc;border-radius:8px;padding:10px 16px;min-width:120px}
.card .v{font-size:26px;font-weight:600} .card .k{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:3px 8px}
th{background:#f3f3f3;cursor:pointer;user-select:none} td.n{text-align:right}
.pos{color:#080} .neg{color:#b00} .legend span{display:inline-block;padding:1px 8px;margin-right:6px}
img.strip{max-width:100%;border:1px solid #ccc;margin:4px 0 14px}
"""

_JS = """
function sortTable(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th);
const asc=th.dataset.asc!=='1';t.querySelectorAll('th').forEach(h=>h.dataset.asc='');th.dataset.asc=asc?'1':'0';
const rows=[...t.tBodies[0].rows];rows.sort((a,b)=>{const x=a.cells[i].dataset.v??a.cells[i].textContent,
y=b.cells[i].dataset.v??b.cells[i].textContent;const nx=parseFloat(x),ny=parseFloat(y);
const c=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return asc?c:-c});rows.forEach(r=>t.tBodies[0].appendChild(r))}
"""


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _num_cell(x: float | None, cls: str = "") -> str:
    v = "" if x is None or math.isnan(x) else f"{x:.6f}"
    return f'<td class="n {cls}" data-v="{v}">{_fmt(x)}</td>'


def _cards(result: JFResult, label: str) -> str:
    items = [
        ("J&F", _fmt(result.JF)),
        ("J (region)", _fmt(result.J)),
        ("F (boundary)", _fmt(result.F)),
        ("videos", str(len(result.videos))),
        ("objects", str(len(result.objects))),
    ]
    cards = "".join(
        f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{v}</div></div>'
        for k, v in items
    )
    return f"<h3>{html.escape(label)}</h3><div class='cards'>{cards}</div>"


def _video_table(result: JFResult, compare: JFResult | None, labels: Sequence[str]) -> str:
    other = {r["video"]: r for r in compare.per_video()} if compare else {}
    head = ["video", "objects", "frames", "J&F", "J", "F"]
    if compare:
        head += [f"J&F ({labels[1]})", "Δ J&F"]
    ths = "".join(f'<th onclick="sortTable(this)">{html.escape(h)}</th>' for h in head)
    body = []
    for row in sorted(result.per_video(), key=lambda r: (math.isnan(r["J&F"]), r["J&F"])):
        cells = [
            f"<td>{html.escape(row['video'])}</td>",
            f'<td class="n">{row["num_objects"]}</td>',
            f'<td class="n">{row["num_frames"]}</td>',
            _num_cell(row["J&F"]),
            _num_cell(row["J"]),
            _num_cell(row["F"]),
        ]
        if compare:
            o = other.get(row["video"])
            ojf = o["J&F"] if o else float("nan")
            delta = row["J&F"] - ojf
            cls = "" if math.isnan(delta) else ("pos" if delta > 0 else "neg" if delta < 0 else "")
            cells += [_num_cell(ojf), _num_cell(delta, cls)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="videos"><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def write_report(
    path: str,
    result: JFResult,
    *,
    pred_dir: str | None = None,
    source: FrameSource | None = None,
    compare: JFResult | None = None,
    compare_pred_dir: str | None = None,
    labels: Sequence[str] = ("this run", "reference"),
    title: str = "J&F evaluation",
    worst: int = 5,
    frames_per_strip: int = 6,
) -> str:
    """Write the self-contained HTML report to ``path`` (atomically); returns ``path``.

    Args:
        result: the scores to report; ``compare``: a second prediction set's scores.
        pred_dir, compare_pred_dir: prediction folders (either layout) for the overlays.
        source: frames and GT for the overlays (:class:`RecordOverlaySource` or :class:`DirOverlaySource`);
            without it (or without ``pred_dir``) the report has no strips.
        worst: number of worst videos (lowest J&F) that get a strip of their worst object.
    """
    from sam2_core.storage import write_text_atomic

    parts = [f"<h1>{html.escape(title)}</h1>"]
    proto = "first and last frames skipped" if result.skip_first_and_last else "all frames"
    parts.append(
        f"<p>Protocol: official SA-V/DAVIS J&amp;F ({proto}); global scores are means over all "
        "objects of all videos (x100).</p>"
    )
    parts.append(_cards(result, labels[0]))
    if compare is not None:
        parts.append(_cards(compare, labels[1]))
        d = result.JF - compare.JF
        parts.append(
            f"<p><b>Δ J&amp;F ({html.escape(labels[0])} − {html.escape(labels[1])}): "
            f"{d:+.2f}</b></p>"
        )
    parts.append("<h2>Per video</h2>")
    parts.append(_video_table(result, compare, labels))
    strips = _strips_html(
        result, compare, pred_dir, source, compare_pred_dir, labels, worst, frames_per_strip
    )
    parts.append(strips)
    if result.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
        parts.append(f"<h2>Warnings</h2><ul>{items}</ul>")
    summary = json.dumps(metrics_dict(result), indent=1)
    parts.append(f"<h2>Summary (KFP metrics)</h2><pre>{html.escape(summary)}</pre>")
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style><script>{_JS}</script>"
        f"</head><body>{''.join(parts)}</body></html>\n"
    )
    write_text_atomic(path, doc)
    return path


def _strips_html(
    result: JFResult,
    compare: JFResult | None,
    pred_dir: str | None,
    source: FrameSource | None,
    compare_pred_dir: str | None,
    labels: Sequence[str],
    worst: int,
    frames_per_strip: int,
) -> str:
    if pred_dir is None or source is None or worst <= 0:
        return ""
    dirs, names = [pred_dir], [labels[0]]
    if compare_pred_dir:
        dirs.append(compare_pred_dir)
        names.append(labels[1])
    legend = (
        f"<p class='legend'><span style='background:rgb{GT_COLOUR}'>ground truth</span>"
        f"<span style='background:rgb{PRED_COLOUR};color:#fff'>prediction</span>"
        f"<span style='background:rgb{BOTH_COLOUR}'>both</span></p>"
    )
    out = [f"<h2>Worst {worst} videos</h2>", legend]
    videos = sorted((v for v in result.videos if v.objects), key=_video_jf)[:worst]
    for v in videos:
        obj = min(v.objects, key=lambda o: o.jf_mean)
        other = None
        if compare is not None:
            other = next(
                (o for o in compare.objects if (o.video, o.obj) == (obj.video, obj.obj)), None
            )
        uri = video_strip(
            obj,
            source=source,
            pred_dirs=dirs,
            labels=names,
            row_scores=[obj, other],
            num_frames=frames_per_strip,
        )
        out.append(
            f"<h3>{html.escape(v.video)} — J&amp;F {_video_jf(v):.1f}; worst object "
            f"{html.escape(obj.obj)} (J {obj.j_mean:.1f}, F {obj.f_mean:.1f})</h3>"
        )
        if uri:
            out.append(f'<img class="strip" alt="{html.escape(v.video)}" src="{uri}">')
    return "".join(out)


def _video_jf(v: VideoScores) -> float:
    return float(np.mean([o.jf_mean for o in v.objects])) if v.objects else float("nan")


# ----------------------------------------------------------------------------- loading results


def load_result_dir(path: str) -> JFResult:
    """Scores of an earlier run from its ``per_frame.json`` (written by ``JFResult.write``)."""
    from sam2_core import storage

    # ``path`` may be a local folder or an object-store URL (sam2kf evaluate --out gs://...)
    pf = storage.join(path, "per_frame.json")
    if not storage.exists(pf):
        raise FileNotFoundError(f"{path}: no per_frame.json (not an evaluation output folder)")
    objs = storage.read_json(pf)
    skip = True
    sj = storage.join(path, "summary.json")
    if storage.exists(sj):
        skip = bool(storage.read_json(sj).get("skip_first_and_last", True))
    by_video: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        by_video.setdefault(o["video"], []).append(o)
    videos = [
        video_scores_from_json({"video": v, "layout": "sav", "objects": os_})
        for v, os_ in sorted(by_video.items())
    ]
    return JFResult(videos, skip_first_and_last=skip)


# ----------------------------------------------------------------------------- metric exports


def metrics_dict(result: JFResult) -> dict[str, float]:
    """Flat scalars for a KFP v2 ``Metrics`` artifact (``metrics.log_metric(k, v)``)."""
    d = {"J&F": result.JF, "J": result.J, "F": result.F}
    out = {k: float(v) for k, v in d.items() if not math.isnan(v)}
    out["num_videos"] = float(len(result.videos))
    out["num_objects"] = float(len(result.objects))
    return out


def kfp_v1_metrics(result: JFResult) -> dict[str, Any]:
    """The same in the KFP v1 ``mlpipeline-metrics.json`` shape (DNS-style metric names)."""
    names = {"J&F": "j-and-f", "J": "j-mean", "F": "f-mean"}
    return {
        "metrics": [
            {"name": names.get(k, k.replace("_", "-")), "numberValue": v, "format": "RAW"}
            for k, v in metrics_dict(result).items()
        ]
    }


def log_kfp_metrics(metrics: Any, result: JFResult) -> None:
    """Log the summary into a KFP ``dsl.Metrics`` output artifact."""
    for k, v in metrics_dict(result).items():
        metrics.log_metric(k, v)


def log_tensorboard(log_dir: str, result: JFResult, *, step: int = 0, prefix: str = "eval") -> None:
    """Global J&F/J/F and per-video J&F as TensorBoard scalars under ``prefix``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=log_dir)
    try:
        for k, v in metrics_dict(result).items():
            writer.add_scalar(f"{prefix}/{k}", v, step)
        for row in result.per_video():
            if not math.isnan(row["J&F"]):
                writer.add_scalar(f"{prefix}_video/{row['video']}/J&F", row["J&F"], step)
    finally:
        writer.close()
