"""results.csv and per_video.csv: names with quotes, commas and formula prefixes stay data."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sam2_core.eval.csv_cells import guard_text
from sam2_core.eval.jf import JFResult, ObjectScores, VideoScores

NASTY_VIDEOS = ['a "quoted", video', "=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "plain"]


def _result() -> JFResult:
    videos = []
    for i, name in enumerate(NASTY_VIDEOS):
        objs = [
            ObjectScores(name, obj, ["00001"], ["00001"], [0.5 + 0.01 * i], [0.25])
            for obj in ('=HYPERLINK("http://x")', 'o,"1"', "003")
        ]
        videos.append(VideoScores(name, "sav", objs, [], []))
    return JFResult(videos, skip_first_and_last=True)


def _parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_guard_text() -> None:
    assert guard_text("=1+1") == "'=1+1"
    assert guard_text("+1") == "'+1"
    assert guard_text("-1") == "'-1"
    assert guard_text("@x") == "'@x"
    assert guard_text("\tx") == "'\tx"
    assert guard_text("a=1") == "a=1"
    assert guard_text("") == ""


def test_results_csv_quotes_names_and_guards_formulas(tmp_path: Path) -> None:
    res = _result()
    paths = res.write(str(tmp_path))
    text = Path(paths["results_csv"]).read_text()
    assert text == res.results_csv()
    rows = _parse(text)
    assert all(len(r) == 5 for r in rows), rows  # no name shifted a column
    assert rows[0][0].strip() == "sequence" and rows[1][0].strip() == "Global score"
    got = [(r[0].rstrip(), r[1]) for r in rows[2:]]
    want = [
        (guard_text(v), guard_text(o))
        for v in NASTY_VIDEOS
        for o in ('=HYPERLINK("http://x")', 'o,"1"', "003")
    ]
    assert got == want
    for r in rows:  # no cell a spreadsheet would evaluate
        for cell in r:
            assert not cell.startswith(("=", "+", "-", "@")), cell
    assert rows[2][2].strip() == f"{res.objects[0].jf_mean:.1f}"  # numbers stay numbers


def test_per_video_csv_quotes_names_and_guards_formulas(tmp_path: Path) -> None:
    res = _result()
    res.write(str(tmp_path))
    with open(tmp_path / "per_video.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["video"] for r in rows] == [guard_text(v) for v in NASTY_VIDEOS]
    assert all(r["layout"] == "sav" and r["num_objects"] == "3" for r in rows)
    assert float(rows[0]["J"]) == 50.0


def test_plain_names_keep_the_official_bytes() -> None:
    objs = [ObjectScores("bike", "001", ["00001"], ["00001"], [1.0], [1.0])]
    res = JFResult([VideoScores("bike", "sav", objs, [], [])], skip_first_and_last=True)
    assert res.results_csv() == (
        "sequence    ,obj,  J&F,    J,    F\n"
        "Global score,   , 100.0, 100.0, 100.0\n"
        "bike        ,001, 100.0, 100.0, 100.0\n"
    )
