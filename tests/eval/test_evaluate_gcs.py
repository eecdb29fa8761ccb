"""`sam2kf evaluate --model ... --out gs://...` against a real GCS-API HTTP emulator.

Data, output, TensorBoard folder and the comparison run all live on gs://; evaluation stages
locally and uploads at the end with summary.json last; a failed run uploads nothing.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator

import pytest

# tests/ is on sys.path (rootdir conftest without __init__.py): reuse the data tests' emulator.
from data.conftest import run_gcs_emulator

from sam2_core import storage
from sam2_core.cli import main as cli_main
from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.data.readers.formats import iter_videos
from sam2_core.eval.report import load_result_dir


@pytest.fixture(scope="module")
def gcs() -> Iterator[str]:
    with run_gcs_emulator("sam2kf-eval") as base:
        yield f"{base}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gcs_demo(gcs: str) -> str:
    """One short demo video (SA-V raw layout) uploaded to the emulator."""
    url = f"{gcs}/demo"
    with tempfile.TemporaryDirectory() as d:
        write_demo_dataset(dst=d, num_videos=1, num_frames=12, sizes=[(48, 80)])
        storage.upload_dir(d, url)
    return url


def test_evaluate_model_to_gcs(
    gcs: str, gcs_demo: str, published_writes: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, tb = f"{gcs}/eval1", f"{gcs}/tb"
    order = published_writes
    args = ["evaluate", "--model", "tiny", "--data", gcs_demo, "--device", "cpu", "--quiet"]
    assert cli_main([*args, "--out", out, "--tensorboard-dir", tb]) == 0
    assert f"results written to {out}" in capsys.readouterr().out

    uploaded = [u for u in order if u.startswith(out + "/")]
    assert uploaded[-1] == f"{out}/summary.json"  # the completion file comes last
    summary = storage.read_json(f"{out}/summary.json")
    assert summary["num_videos"] == 1 and 0.0 <= summary["J&F"] <= 100.0
    assert summary["predictions"] == f"{out}/predictions"
    assert summary["files"]["report_html"] == f"{out}/report.html"
    assert b"<html" in storage.read_bytes(f"{out}/report.html")[:2000].lower()
    assert storage.read_text(f"{out}/results.csv").startswith("sequence")
    rec = next(iter_videos(gcs_demo))
    for o in rec.obj_ids:
        names = storage.listdir(f"{out}/predictions/{rec.video_id}/{o:03d}")
        assert names == [f"{f:05d}.png" for f in rec.annotated_indices]
    assert pytest.approx(summary["J&F"]) == load_result_dir(out).JF
    assert any(n.startswith("events.out.tfevents.") for n in storage.listdir(tb))

    # A second run compared with the first, both on gs://: the comparison reads the remote run.
    out2 = f"{gcs}/eval2"
    assert cli_main([*args, "--out", out2, "--compare", out]) == 0
    assert storage.read_json(f"{out2}/summary.json")["num_videos"] == 1
    assert "reference" not in storage.read_text(f"{out}/report.html")
    assert "reference" in storage.read_text(f"{out2}/report.html")  # the compared run's column


def test_failed_evaluation_uploads_nothing(gcs: str) -> None:
    out = f"{gcs}/eval_bad"
    with pytest.raises(Exception):  # noqa: B017 - any error; what matters is the output
        from sam2_core.eval.vos import evaluate_model

        evaluate_model(model="tiny", data=f"{gcs}/no_such_data", out=out, progress=False)
    assert storage.listdir(out) == []
    assert json.dumps(storage.listdir(gcs))  # the bucket itself is still readable


def test_interrupted_remote_evaluation_resumes(gcs: str) -> None:
    """A run killed after its first video keeps that video on gs:// (predictions, then its
    progress marker; no summary.json); the rerun downloads it, evaluates only the others and
    ends with the same scores as an uninterrupted run."""
    from torch import nn

    from eval.test_vos import GTPredictor
    from sam2_core.eval.vos import evaluate_model

    data = f"{gcs}/demo3"
    with tempfile.TemporaryDirectory() as d:
        write_demo_dataset(dst=d, num_videos=3, num_frames=12, sizes=[(48, 80)])
        storage.upload_dir(d, data)
    videos = [r.video_id for r in iter_videos(data)]

    class Preempted(RuntimeError):
        pass

    class DiesOnSecondVideo(GTPredictor):
        def init_state(self, frames):  # type: ignore[no-untyped-def]
            if frames.video_id == videos[1]:
                raise Preempted(frames.video_id)
            return super().init_state(frames)

    kw = dict(model=nn.Linear(1, 1), data=data, report=False, progress=False)
    out = f"{gcs}/eval_resume"
    with pytest.raises(Preempted):
        evaluate_model(out=out, predictor_cls=DiesOnSecondVideo, **kw)  # type: ignore[arg-type]
    assert storage.listdir(f"{out}/_progress") == [f"{videos[0]}.json"]
    assert storage.listdir(f"{out}/predictions") == [videos[0]]
    assert not storage.exists(f"{out}/summary.json")

    GTPredictor.calls.clear()
    resumed = evaluate_model(out=out, predictor_cls=GTPredictor, **kw)  # type: ignore[arg-type]
    assert GTPredictor.calls == videos[1:], "the finished video is not evaluated again"
    assert storage.listdir(f"{out}/_progress") == sorted(f"{v}.json" for v in videos)
    fresh = evaluate_model(out=f"{gcs}/eval_fresh", predictor_cls=GTPredictor, **kw)  # type: ignore[arg-type]
    assert resumed["J&F"] == fresh["J&F"] and resumed["num_videos"] == 3
    assert storage.read_json(f"{out}/summary.json")["J&F"] == fresh["J&F"]


def test_remote_resume_with_other_weights_redoes_the_videos(gcs: str, gcs_demo: str) -> None:
    """Model B into a gs:// folder of model A: B's own numbers and files, none of A's left."""
    import torch
    from torch import nn

    from eval.test_vos_resume_fingerprint import WeightPredictor
    from sam2_core.eval.vos import evaluate_model

    def model(w: float) -> nn.Linear:
        m = nn.Linear(1, 1)
        with torch.no_grad():
            m.weight.fill_(w)
            m.bias.zero_()
        return m

    kw = dict(data=gcs_demo, report=False, progress=False, predictor_cls=WeightPredictor)
    out = f"{gcs}/eval_ab"
    a = evaluate_model(model=model(1.0), out=out, write_all_frames=True, **kw)  # type: ignore[arg-type]
    b = evaluate_model(model=model(-1.0), out=out, **kw)  # type: ignore[arg-type]
    fresh = evaluate_model(model=model(-1.0), out=f"{gcs}/eval_b", **kw)  # type: ignore[arg-type]
    assert a["J&F"] != fresh["J&F"]
    assert b["J&F"] == fresh["J&F"] and b["fingerprint"] == fresh["fingerprint"]
    assert storage.read_json(f"{out}/summary.json")["J&F"] == fresh["J&F"]

    def files(root: str) -> list[str]:
        fs, path = storage.get_fs(root)
        return sorted(p[len(path) :] for p in fs.find(path))

    # A wrote every frame (write_all_frames); B only the annotated ones, and nothing of A stays.
    assert files(f"{out}/predictions") == files(f"{gcs}/eval_b/predictions")
    for name in storage.listdir(f"{out}/_progress"):
        marker = storage.read_json(f"{out}/_progress/{name}")
        assert marker["fingerprint"] == fresh["fingerprint"]


def test_remote_strict_resume_names_the_remote_folder(gcs: str, gcs_demo: str) -> None:
    from torch import nn

    from eval.test_vos_resume_fingerprint import WeightPredictor
    from sam2_core.eval.vos import ResumeMismatchError, evaluate_model

    kw = dict(data=gcs_demo, report=False, progress=False, predictor_cls=WeightPredictor)
    out = f"{gcs}/eval_strict"
    evaluate_model(model=nn.Linear(1, 1), out=out, **kw)  # type: ignore[arg-type]
    with pytest.raises(ResumeMismatchError, match=f"^{out}: finished video"):
        evaluate_model(model=nn.Linear(1, 1), out=out, resume="strict", **kw)  # type: ignore[arg-type]
