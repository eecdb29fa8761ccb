"""extract_dataset(videos=...) and `sam2kf extract --videos/--videos-file`: incremental extraction."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam2_core.cli import main as cli_main
from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.data.prep.extract import extract_dataset, load_summary


@pytest.fixture(scope="module")
def src3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src3")
    write_demo_dataset(dst=str(src), num_videos=3, num_frames=9, sizes=[(48, 64)])
    return src


def _extracted(dst: Path) -> list[str]:
    return sorted(p.name for p in (dst / "JPEGImages_24fps").iterdir())


def test_only_selected_videos_then_the_rest(src3: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    summary = extract_dataset(src=str(src3), dst=str(dst), videos=["demo_002"], progress=False)
    assert summary.ok == ["demo_002"] and not summary.failed and summary.frames == 3
    assert _extracted(dst) == ["demo_002"]
    assert load_summary(str(dst))["ok"] == ["demo_002"]
    # a later increment: the finished video is skipped, not redone
    summary = extract_dataset(
        src=str(src3), dst=str(dst), videos=["demo_000", "demo_002"], progress=False
    )
    assert summary.ok == ["demo_000", "demo_002"] and summary.skipped == ["demo_002"]
    assert _extracted(dst) == ["demo_000", "demo_002"]


def test_unknown_ids_fail_by_name_and_outside_problems_are_not_reported(
    src3: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for p in src3.iterdir():
        if p.name.startswith("demo_001"):
            (src / p.name).write_bytes(p.read_bytes())
    (src / "bad name!.mp4").write_bytes(b"not a video")  # a problem outside the selection
    dst = tmp_path / "out"
    summary = extract_dataset(
        src=str(src), dst=str(dst), videos=["demo_001", "nope_9"], progress=False
    )
    assert summary.ok == ["demo_001"]
    assert list(summary.failed) == ["nope_9"] and "nope_9.mp4" in summary.failed["nope_9"]
    with pytest.raises(TypeError, match="sequence of video ids"):
        extract_dataset(src=str(src), dst=str(dst), videos="demo_001", progress=False)


def test_cli_videos_and_videos_file(
    src3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "cli"
    args = ["extract", str(src3), str(dst), "--workers", "0", "--no-progress"]
    assert cli_main([*args, "--videos", "demo_000, demo_001"]) == 0
    assert _extracted(dst) == ["demo_000", "demo_001"]
    ids = tmp_path / "ids.txt"
    ids.write_text("# new this week\ndemo_002\n\n")
    assert cli_main([*args, "--videos-file", str(ids)]) == 0
    assert _extracted(dst) == ["demo_000", "demo_001", "demo_002"]
    assert cli_main([*args, "--videos", "zzz_1"]) == 1
    assert "FAILED zzz_1" in capsys.readouterr().err
    assert cli_main([*args, "--videos-file", str(tmp_path / "missing.txt")]) == 2
    assert "videos file not found" in capsys.readouterr().err
    assert cli_main([*args, "--videos", " , "]) == 2
