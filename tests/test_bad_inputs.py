"""Bad-input corpus: every ``sam2kf`` command refuses bad input with one line, and leaves nothing
that looks finished.

Each case runs ``sam2_core.cli.main`` in-process and asserts: the exit status (2 bad input,
1 failed job, 4 lost promotion race), exactly one stderr line, which starts with
``sam2kf <cmd>:`` and names the input (a flag or the file), no traceback, and no file under the
case's output folder that a later step would take as complete (``summary.json``,
``manifest.json``, ``_COMPLETE``, ``champion.json``, a model file, ...).
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from sam2_core.cli import main

LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")

#: names that mark a finished output for some later step
COMPLETE_NAMES = {
    "summary.json",
    "manifest.json",
    "_COMPLETE",
    "extract_summary.json",
    "champion.json",
    "model_final.pt",
    "results.csv",
    "report.html",
    "out.pt",
    "pipeline.yaml",
}


@pytest.fixture(scope="module")
def res(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs shared by all cases: tiny demo data, its frames and shards, and broken files."""
    from sam2_core.data.prep.demo import write_demo_dataset
    from sam2_core.data.prep.extract import extract_dataset
    from sam2_core.data.prep.shard_writer import write_shards

    root = tmp_path_factory.mktemp("bad_inputs")
    raw, frames, shards = root / "raw", root / "frames", root / "shards"
    write_demo_dataset(dst=str(raw), num_videos=2, num_frames=8, sizes=[(64, 96)])
    extract_dataset(src=str(raw), dst=str(frames), every=4, progress=False)
    write_shards(src=str(frames), dst=str(shards), val_fraction=0.5)
    files = {
        "garbage.pt": b"\x00not a torch file" * 10,
        "garbage.safetensors": b"\xff" * 64,
        "bad.json": b'{"J&F": 4',
        "list.json": b"[1, 2]",
        "nojf.json": json.dumps({"J": 1.0}).encode(),
        "strjf.json": json.dumps({"J&F": "high"}).encode(),
        "nanjf.json": b'{"J&F": NaN}',
        "empty": b"",
        "model.pt": b"any bytes: promote only checks that the model exists",
        "token": b"s3cr3t-token-value\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    # Shards whose manifest is not JSON, and shards with a data file missing.
    for name, damage in (("shards_badjson", "json"), ("shards_missing", "missing")):
        dst = root / name
        write_shards(src=str(frames), dst=str(dst), val_fraction=0.5)
        if damage == "json":
            (dst / "manifest.json").write_text("{not json")
        else:
            for f in dst.rglob("*.parquet"):
                f.unlink()
    # retrain config dirs: invalid JSON and an unknown key
    for name, text in (("cfg_badjson", "{oops"), ("cfg_badkey", '{"nonsense": 1}')):
        (root / name).mkdir()
        (root / name / "retrain.json").write_text(text)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        "root": str(root),
        "raw": str(raw),
        "frames": str(frames),
        "shards": str(shards),
        "host": f"http://127.0.0.1:{port}",
        **{k.replace(".", "_"): str(root / k) for k in files},
        **{k: str(root / k) for k in ("shards_badjson", "shards_missing")},
        **{k: str(root / k) for k in ("cfg_badjson", "cfg_badkey")},
    }


K = ["--host", "{host}", "--raw-uri", "r", "--registry-uri", "g"]  # submit/schedule basics
CRON = ["--cron", "0 0 3 * * 0"]
PROMOTE = ["--registry", "{out}/reg", "--dataset-name", "d", "--dataset-version", "v"]
PROMOTE_SPLIT = [*PROMOTE, "--split", "val", "--model-uri", "{model_pt}"]
EVAL = ["--model", "tiny", "--data", "{shards}", "--out", "{out}/ev", "--device", "cpu", "-q"]
TRAIN = ["trainer.output_dir={out}/run", "data=shards", "data.shards={shards}"]

# (case id, argv, exit status, text the one stderr line must contain)
CASES: list[tuple[str, list[str], int, str]] = [
    # ---- global / usage
    ("no-such-command", ["frobnicate"], 2, "frobnicate"),
    ("unknown-global-flag", ["--frobnicate"], 2, "--frobnicate"),
    # ---- extract
    ("extract-missing-args", ["extract"], 2, "SRC"),
    ("extract-missing-dst", ["extract", "{raw}"], 2, "DST"),
    ("extract-src-missing", ["extract", "{root}/nope", "{out}/f", "--no-progress"], 2, "nope"),
    ("extract-src-empty", ["extract", "{out}/empty", "{out}/f", "--no-progress"], 2, "empty"),
    ("extract-every-text", ["extract", "{raw}", "{out}/f", "--every", "x"], 2, "--every"),
    ("extract-every-zero", ["extract", "{raw}", "{out}/f", "--every", "0"], 2, "--every"),
    ("extract-every-negative", ["extract", "{raw}", "{out}/f", "--every", "-2"], 2, "--every"),
    ("extract-quality-high", ["extract", "{raw}", "{out}/f", "--quality", "500"], 2, "--quality"),
    ("extract-quality-zero", ["extract", "{raw}", "{out}/f", "--quality", "0"], 2, "--quality"),
    ("extract-workers-text", ["extract", "{raw}", "{out}/f", "--workers", "many"], 2, "--workers"),
    ("extract-workers-neg", ["extract", "{raw}", "{out}/f", "--workers", "-1"], 2, "--workers"),
    (
        "extract-annotations",
        ["extract", "{raw}", "{out}/f", "--annotations", "x"],
        2,
        "--annotations",
    ),
    (
        "extract-videos-and-file",
        ["extract", "{raw}", "{out}/f", "--videos", "a", "--videos-file", "b"],
        2,
        "--videos",
    ),
    ("extract-videos-empty", ["extract", "{raw}", "{out}/f", "--videos", " , "], 2, "--videos"),
    (
        "extract-videos-file-missing",
        ["extract", "{raw}", "{out}/f", "--videos-file", "{root}/ids.txt"],
        2,
        "ids.txt",
    ),
    (
        "extract-videos-file-empty",
        ["extract", "{raw}", "{out}/f", "--videos-file", "{empty}"],
        2,
        "empty",
    ),
    ("extract-unknown-flag", ["extract", "{raw}", "{out}/f", "--evrey", "2"], 2, "--evrey"),
    # ---- shard
    ("shard-missing-src", ["shard"], 2, "src"),
    ("shard-no-dst", ["shard", "{frames}"], 2, "DST"),
    ("shard-src-missing", ["shard", "{root}/nope", "{out}/s", "--no-progress"], 2, "nope"),
    ("shard-src-not-frames", ["shard", "{bad_json}", "{out}/s", "--no-progress"], 2, "bad.json"),
    (
        "shard-size-text",
        ["shard", "{frames}", "{out}/s", "--shard-size-mb", "big"],
        2,
        "--shard-size-mb",
    ),
    (
        "shard-size-zero",
        ["shard", "{frames}", "{out}/s", "--shard-size-mb", "0"],
        2,
        "--shard-size-mb",
    ),
    (
        "shard-size-neg",
        ["shard", "{frames}", "{out}/s", "--shard-size-mb", "-5"],
        2,
        "--shard-size-mb",
    ),
    (
        "shard-rowgroup-zero",
        ["shard", "{frames}", "{out}/s", "--row-group-mb", "0"],
        2,
        "--row-group-mb",
    ),
    (
        "shard-val-frac-high",
        ["shard", "{frames}", "{out}/s", "--val-fraction", "1.5"],
        2,
        "--val-fraction",
    ),
    (
        "shard-val-frac-neg",
        ["shard", "{frames}", "{out}/s", "--val-fraction", "-0.1"],
        2,
        "--val-fraction",
    ),
    (
        "shard-val-frac-nan",
        ["shard", "{frames}", "{out}/s", "--val-fraction", "nan"],
        2,
        "--val-fraction",
    ),
    (
        "shard-val-frac-text",
        ["shard", "{frames}", "{out}/s", "--val-fraction", "half"],
        2,
        "--val-fraction",
    ),
    ("shard-seed-text", ["shard", "{frames}", "{out}/s", "--seed", "x"], 2, "--seed"),
    (
        "shard-format",
        ["shard", "{frames}", "{out}/s", "--format", "nope", "--no-progress"],
        2,
        "nope",
    ),
    ("shard-verify-missing", ["shard", "{root}/nope", "--verify"], 2, "nope"),
    ("shard-verify-badjson", ["shard", "{shards_badjson}", "--verify"], 2, "manifest.json"),
    ("shard-verify-missing-file", ["shard", "{shards_missing}", "--verify"], 2, "shards_missing"),
    # ---- train
    ("train-experiment", ["train", "experiment=nope", "trainer.output_dir={out}/run"], 2, "nope"),
    ("train-model", ["train", "model=nope", "trainer.output_dir={out}/run"], 2, "nope"),
    ("train-data", ["train", "data=nope", "trainer.output_dir={out}/run"], 2, "nope"),
    ("train-bad-override", ["train", "trainer.max_steps"], 2, "trainer.max_steps"),
    (
        "train-unknown-key",
        ["train", "trainer.nosuch=1", "trainer.output_dir={out}/run"],
        2,
        "nosuch",
    ),
    ("train-max-steps-text", ["train", *TRAIN, "trainer.max_steps=abc"], 2, "max_steps"),
    (
        "train-shards-missing",
        ["train", "trainer.output_dir={out}/run", "data=shards", "data.shards={root}/nope"],
        2,
        "nope",
    ),
    (
        "train-shards-badjson",
        ["train", "trainer.output_dir={out}/run", "data=shards", "data.shards={shards_badjson}"],
        2,
        "manifest.json",
    ),
    (
        "train-shards-nofiles",
        ["train", "trainer.output_dir={out}/run", "data=shards", "data.shards={shards_missing}"],
        2,
        "shards_missing",
    ),
    (
        "train-checkpoint-missing",
        ["train", *TRAIN, "model.checkpoint={root}/nope.pt"],
        2,
        "nope.pt",
    ),
    (
        "train-checkpoint-garbage",
        ["train", *TRAIN, "model.checkpoint={garbage_pt}"],
        2,
        "garbage.pt",
    ),
    (
        "train-checkpoint-name",
        ["train", *TRAIN, "model.checkpoint=sam2.1_hiera_huge"],
        2,
        "sam2.1_hiera_huge",
    ),
    ("train-unknown-flag", ["train", "--frobnicate"], 2, "--frobnicate"),
    # ---- evaluate
    ("eval-nothing", ["evaluate"], 2, "--model"),
    ("eval-gt-only", ["evaluate", "--gt-dir", "{out}/gt"], 2, "--pred-dir"),
    ("eval-pred-only", ["evaluate", "--pred-dir", "{out}/p"], 2, "--gt-dir"),
    (
        "eval-both-modes",
        ["evaluate", "--gt-dir", "a", "--pred-dir", "b", "--model", "tiny"],
        2,
        "--model",
    ),
    ("eval-model-no-data", ["evaluate", "--model", "tiny", "--out", "{out}/ev"], 2, "--data"),
    ("eval-model-no-out", ["evaluate", "--model", "tiny", "--data", "{shards}"], 2, "--out"),
    (
        "eval-gt-missing",
        ["evaluate", "--gt-dir", "{root}/nogt", "--pred-dir", "{frames}", "--out", "{out}/ev"],
        2,
        "nogt",
    ),
    (
        "eval-data-missing",
        ["evaluate", "--model", "tiny", "--data", "{root}/nodata", "--out", "{out}/ev", "-q"],
        2,
        "nodata",
    ),
    (
        "eval-model-unknown",
        ["evaluate", "--model", "nosuch", "--data", "{shards}", "--out", "{out}/ev", "-q"],
        2,
        "nosuch",
    ),
    (
        "eval-checkpoint-missing",
        [*["evaluate"], *EVAL, "--checkpoint", "{root}/none.pt"],
        2,
        "none.pt",
    ),
    (
        "eval-checkpoint-garbage",
        [*["evaluate"], *EVAL, "--checkpoint", "{garbage_pt}"],
        2,
        "garbage.pt",
    ),
    (
        "eval-shards-badjson",
        ["evaluate", "--model", "tiny", "--data", "{shards_badjson}", "--out", "{out}/ev", "-q"],
        2,
        "manifest.json",
    ),
    ("eval-split-unknown", [*["evaluate"], *EVAL, "--split", "nosplit"], 2, "nosplit"),
    ("eval-max-videos-text", ["evaluate", *EVAL, "--max-videos", "x"], 2, "--max-videos"),
    ("eval-max-videos-zero", ["evaluate", *EVAL, "--max-videos", "0"], 2, "--max-videos"),
    ("eval-prompt", ["evaluate", *EVAL, "--prompt", "last"], 2, "--prompt"),
    ("eval-layout", ["evaluate", *EVAL, "--layout", "coco"], 2, "--layout"),
    ("eval-device", ["evaluate", *EVAL[:-3], "--device", "tpu", "-q"], 2, "tpu"),
    ("eval-workers-text", ["evaluate", *EVAL, "-n", "x"], 2, "-n"),
    ("eval-videos-unknown", ["evaluate", *EVAL, "--videos", "nosuchvideo"], 2, "nosuchvideo"),
    # ---- promote
    ("promote-no-registry", ["promote", "--jf", "1"], 2, "--registry"),
    ("promote-no-model", ["promote", *PROMOTE, "--split", "val", "--jf", "50"], 2, "--model-uri"),
    ("promote-no-jf", ["promote", *PROMOTE_SPLIT], 2, "--jf"),
    (
        "promote-no-dataset",
        [
            "promote",
            "--registry",
            "{out}/reg",
            "--model-uri",
            "{model_pt}",
            "--jf",
            "5",
            "--split",
            "val",
        ],
        2,
        "--dataset-name",
    ),
    (
        "promote-no-split",
        ["promote", *PROMOTE, "--model-uri", "{model_pt}", "--jf", "5"],
        2,
        "--split",
    ),
    ("promote-jf-nan", ["promote", *PROMOTE_SPLIT, "--jf", "nan"], 2, "--jf"),
    ("promote-jf-inf", ["promote", *PROMOTE_SPLIT, "--jf", "inf"], 2, "--jf"),
    ("promote-jf-neg", ["promote", *PROMOTE_SPLIT, "--jf", "-5"], 2, "--jf"),
    ("promote-jf-150", ["promote", *PROMOTE_SPLIT, "--jf", "150"], 2, "--jf"),
    ("promote-jf-text", ["promote", *PROMOTE_SPLIT, "--jf", "good"], 2, "--jf"),
    (
        "promote-jf-and-summary",
        ["promote", *PROMOTE_SPLIT, "--jf", "5", "--summary", "{bad_json}"],
        2,
        "--summary",
    ),
    (
        "promote-summary-missing",
        ["promote", *PROMOTE_SPLIT, "--summary", "{root}/none.json"],
        2,
        "none.json",
    ),
    (
        "promote-summary-badjson",
        ["promote", *PROMOTE_SPLIT, "--summary", "{bad_json}"],
        2,
        "bad.json",
    ),
    (
        "promote-summary-list",
        ["promote", *PROMOTE_SPLIT, "--summary", "{list_json}"],
        2,
        "list.json",
    ),
    (
        "promote-summary-nojf",
        ["promote", *PROMOTE_SPLIT, "--summary", "{nojf_json}"],
        2,
        "nojf.json",
    ),
    (
        "promote-summary-strjf",
        ["promote", *PROMOTE_SPLIT, "--summary", "{strjf_json}"],
        2,
        "strjf.json",
    ),
    ("promote-summary-nanjf", ["promote", *PROMOTE_SPLIT, "--summary", "{nanjf_json}"], 2, "J&F"),
    (
        "promote-model-missing",
        ["promote", *PROMOTE, "--split", "val", "--model-uri", "{root}/gone.pt", "--jf", "5"],
        2,
        "gone.pt",
    ),
    (
        "promote-margin-neg",
        ["promote", *PROMOTE_SPLIT, "--jf", "5", "--margin", "-1"],
        2,
        "--margin",
    ),
    (
        "promote-margin-nan",
        ["promote", *PROMOTE_SPLIT, "--jf", "5", "--margin", "nan"],
        2,
        "--margin",
    ),
    (
        "promote-margin-text",
        ["promote", *PROMOTE_SPLIT, "--jf", "5", "--margin", "x"],
        2,
        "--margin",
    ),
    (
        "promote-champion-jf-200",
        ["promote", *PROMOTE_SPLIT, "--jf", "5", "--champion-jf", "200"],
        2,
        "--champion-jf",
    ),
    (
        "promote-champion-jf-nan",
        ["promote", *PROMOTE_SPLIT, "--jf", "5", "--champion-jf", "nan"],
        2,
        "--champion-jf",
    ),
    # ---- export
    ("export-no-args", ["export"], 2, "--model"),
    ("export-no-out", ["export", "--model", "tiny", "--checkpoint", "{garbage_pt}"], 2, "--out"),
    (
        "export-checkpoint-missing",
        ["export", "--model", "tiny", "--checkpoint", "{root}/none.pt", "--out", "{out}/out.pt"],
        2,
        "none.pt",
    ),
    (
        "export-checkpoint-garbage",
        ["export", "--model", "tiny", "--checkpoint", "{garbage_pt}", "--out", "{out}/out.pt"],
        2,
        "garbage.pt",
    ),
    (
        "export-safetensors-garbage",
        [
            "export",
            "--model",
            "tiny",
            "--checkpoint",
            "{garbage_safetensors}",
            "--out",
            "{out}/out.pt",
        ],
        2,
        "garbage.safetensors",
    ),
    (
        "export-checkpoint-json",
        ["export", "--model", "tiny", "--checkpoint", "{bad_json}", "--out", "{out}/out.pt"],
        2,
        "bad.json",
    ),
    (
        "export-checkpoint-empty",
        ["export", "--model", "tiny", "--checkpoint", "{empty}", "--out", "{out}/out.pt"],
        2,
        "empty",
    ),
    (
        "export-model-unknown",
        ["export", "--model", "nosuch", "--checkpoint", "{root}/none.pt", "--out", "{out}/out.pt"],
        2,
        "none.pt",
    ),
    # ---- demo-data
    ("demo-no-dst", ["demo-data"], 2, "DST"),
    ("demo-size-text", ["demo-data", "{out}/d", "--size", "big"], 2, "--size"),
    ("demo-size-odd", ["demo-data", "{out}/d", "--size", "63x95"], 2, "63"),
    ("demo-size-zero", ["demo-data", "{out}/d", "--size", "0x0"], 2, "--size"),
    ("demo-videos-text", ["demo-data", "{out}/d", "--num-videos", "x"], 2, "--num-videos"),
    ("demo-videos-zero", ["demo-data", "{out}/d", "--num-videos", "0"], 2, "--num-videos"),
    ("demo-videos-neg", ["demo-data", "{out}/d", "--num-videos", "-3"], 2, "--num-videos"),
    ("demo-frames-zero", ["demo-data", "{out}/d", "--num-frames", "0"], 2, "--num-frames"),
    ("demo-frames-text", ["demo-data", "{out}/d", "--num-frames", "many"], 2, "--num-frames"),
    ("demo-seed-text", ["demo-data", "{out}/d", "--seed", "x"], 2, "--seed"),
    # ---- run
    ("run-not-local", ["run"], 2, "--local"),
    ("run-videos-text", ["run", "--local", "--demo-videos", "x"], 2, "--demo-videos"),
    ("run-nproc-text", ["run", "--local", "--nproc-per-node", "two"], 2, "--nproc-per-node"),
    # ---- compile
    (
        "compile-eval-gpus-text",
        ["compile", "-o", "{out}/pipeline.yaml", "--eval-gpus", "x"],
        2,
        "--eval-gpus",
    ),
    (
        "compile-eval-gpus-neg",
        ["compile", "-o", "{out}/pipeline.yaml", "--eval-gpus", "-1"],
        2,
        "--eval-gpus",
    ),
    (
        "compile-node-selector",
        ["compile", "-o", "{out}/pipeline.yaml", "--node-selector", "gpu"],
        2,
        "--node-selector",
    ),
    (
        "compile-toleration-json",
        ["compile", "-o", "{out}/pipeline.yaml", "--toleration", "{bad"],
        2,
        "--toleration",
    ),
    (
        "compile-toleration-list",
        ["compile", "-o", "{out}/pipeline.yaml", "--toleration", "[1]"],
        2,
        "--toleration",
    ),
    (
        "compile-runtime-kind",
        ["compile", "-o", "{out}/pipeline.yaml", "--train-runtime-kind", "X"],
        2,
        "--train-runtime-kind",
    ),
    (
        "compile-retries-text",
        ["compile", "-o", "{out}/pipeline.yaml", "--data-retries", "x"],
        2,
        "--data-retries",
    ),
    (
        "compile-retries-neg",
        ["compile", "-o", "{out}/pipeline.yaml", "--data-retries", "-1"],
        2,
        "--data-retries",
    ),
    ("compile-unknown-flag", ["compile", "--gpus", "2"], 2, "--gpus"),
    # ---- submit
    ("submit-no-host", ["submit", "--raw-uri", "r", "--registry-uri", "g"], 2, "--host"),
    ("submit-no-registry", ["submit", "--host", "{host}", "--raw-uri", "r"], 2, "--registry-uri"),
    ("submit-no-raw", ["submit", "--host", "{host}", "--registry-uri", "g"], 2, "--raw-uri"),
    ("submit-param-unknown", ["submit", *K, "-p", "nope=1"], 2, "nope"),
    ("submit-param-no-eq", ["submit", *K, "-p", "max_steps"], 2, "max_steps"),
    ("submit-param-int", ["submit", *K, "-p", "max_steps=ten"], 2, "max_steps"),
    ("submit-param-float", ["submit", *K, "-p", "min_jf_gain=lots"], 2, "min_jf_gain"),
    ("submit-token-argv", ["submit", *K, "--token", "s3cr3t-token-value"], 2, "--token"),
    ("submit-token-file-missing", ["submit", *K, "--token-file", "{root}/no-token"], 2, "no-token"),
    ("submit-token-file-empty", ["submit", *K, "--token-file", "{empty}"], 2, "--token-file"),
    ("submit-unreachable", ["submit", *K], 2, "--host"),
    ("submit-unreachable-token", ["submit", *K, "--token-file", "{token}"], 2, "--host"),
    ("submit-node-selector", ["submit", *K, "--node-selector", "x"], 2, "--node-selector"),
    ("submit-toleration", ["submit", *K, "--toleration", "nope"], 2, "--toleration"),
    ("submit-eval-gpus", ["submit", *K, "--eval-gpus", "one"], 2, "--eval-gpus"),
    # ---- schedule
    ("schedule-no-cron", ["schedule", *K], 2, "--cron"),
    ("schedule-cron-5", ["schedule", *K, "--cron", "0 3 * * 0"], 2, "6"),
    ("schedule-cron-7", ["schedule", *K, "--cron", "0 0 3 * * 0 2026"], 2, "--cron"),
    ("schedule-cron-text", ["schedule", *K, "--cron", "weekly"], 2, "--cron"),
    ("schedule-cron-empty", ["schedule", *K, "--cron", ""], 2, "--cron"),
    ("schedule-unreachable", ["schedule", *K, *CRON], 2, "--host"),
    ("schedule-param", ["schedule", *K, *CRON, "-p", "num_nodes=two"], 2, "num_nodes"),
    ("schedule-token-argv", ["schedule", *K, *CRON, "--token", "s3cr3t-token-value"], 2, "--token"),
    # ---- retrain (the CronJob's program)
    ("retrain-no-sub", ["retrain"], 2, "retrain"),
    (
        "retrain-bad-json",
        ["retrain", "cron", "--config-dir", "{cfg_badjson}", "--run-id", "r", "--dry-run"],
        2,
        "retrain.json",
    ),
    (
        "retrain-bad-key",
        ["retrain", "cron", "--config-dir", "{cfg_badkey}", "--run-id", "r", "--dry-run"],
        2,
        "retrain.json",
    ),
]


def _fill(argv: list[str], values: dict[str, str]) -> list[str]:
    out = []
    for item in argv:
        for key, value in values.items():
            item = item.replace("{" + key + "}", value)
        out.append(item)
    return out


def test_corpus_size() -> None:
    assert len(CASES) >= 100
    assert len({case[0] for case in CASES}) == len(CASES)


#: known gaps in the library (outside the CLI), each with the owner's issue item
XFAIL: dict[str, str] = {}


@pytest.mark.parametrize(
    ("argv", "status", "needle"),
    [
        pytest.param(*c[1:], id=c[0], marks=[pytest.mark.xfail(reason=XFAIL[c[0]], strict=True)])
        if c[0] in XFAIL
        else pytest.param(*c[1:], id=c[0])
        for c in CASES
    ],
)
def test_bad_input(
    argv: list[str],
    status: int,
    needle: str,
    res: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SAM2KF_KFP_TOKEN", "KFP_TOKEN", "SAM2KF_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "empty").mkdir()
    args = _fill(argv, {**res, "out": str(out)})
    rc = main(args)
    err = capsys.readouterr().err
    # Log records (timestamped progress, e.g. train's process-group line) may precede the
    # error; none may be an ERROR record. Everything else on stderr is the one error line.
    records = [line for line in err.splitlines() if LOG_RECORD.match(line)]
    lines = [line for line in err.splitlines() if line.strip() and not LOG_RECORD.match(line)]
    assert not [r for r in records if " ERROR " in r or " CRITICAL " in r], err
    assert rc == status, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    line = lines[0]
    command = next((a for a in args if not a.startswith("-")), "")
    assert line.startswith(f"sam2kf {command}:") or line.startswith("sam2kf:"), line
    assert _fill([needle], {**res, "out": str(out)})[0] in line, line
    assert "s3cr3t-token-value" not in line
    left = [p for p in out.rglob("*") if p.name in COMPLETE_NAMES]
    assert not left, left


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "schedule", "--host", "h", "--cron", "1 2", "--raw-uri", "r",
                 "--registry-uri", "g"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("sam2kf schedule: --cron")


def test_token_comes_from_the_environment_and_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from sam2_core.commands.secrets import MaskSecrets, read_token, redact_argv

    monkeypatch.setenv("KFP_TOKEN", "env-token-1234")
    assert read_token(token_file=None) == "env-token-1234"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskSecrets())
    log = logging.getLogger("sam2kf.test_secrets")
    log.addHandler(handler)
    try:
        log.warning("sending %s now", "env-token-1234")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == "sending *** now\n"
    assert redact_argv(["submit", "--token", "abc", "--token=xyz", "env-token-1234"]) == [
        "submit",
        "--token",
        "***",
        "--token=***",
        "***",
    ]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not LOG_RECORD.match(line)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_disk_full_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from sam2_core.data.prep import demo

    def full(**kwargs: object) -> list[str]:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "d" / "a.mp4"))

    monkeypatch.setattr(demo, "write_demo_dataset", full)
    assert main(["demo-data", str(tmp_path / "d")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("sam2kf demo-data: ") and "a.mp4" in line and "no space left" in line


def test_unexpected_failure_is_exit_1_with_a_debug_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam2_core.data.prep import demo

    def broken(**kwargs: object) -> list[str]:
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(demo, "write_demo_dataset", broken)
    assert main(["demo-data", str(tmp_path / "d")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "encoder crashed" in line and "--debug" in line


def test_promote_lost_race_is_exit_4(
    res: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sam2_core.registry import PromotionRaceLost, Registry

    def lose(self: Registry, *args: object, **kwargs: object) -> None:
        raise PromotionRaceLost("the new champion was measured on another split")

    monkeypatch.setattr(Registry, "promote", lose)
    argv = [
        a.replace("{out}", str(tmp_path)).replace("{model_pt}", res["model_pt"])
        for a in PROMOTE_SPLIT
    ]
    assert main(["promote", *argv, "--jf", "50"]) == 4
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("sam2kf promote: --registry") and "another promotion won" in line
    assert not (tmp_path / "reg" / "champion.json").exists()


def test_promote_exit_status_says_what_happened(
    res: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        a.replace("{out}", str(tmp_path)).replace("{model_pt}", res["model_pt"])
        for a in PROMOTE_SPLIT
    ]
    assert main(["promote", *argv, "--jf", "50"]) == 0
    assert main(["promote", *argv, "--jf", "40", "--run-id", "r2"]) == 3
    assert "kept champion" in capsys.readouterr().out
