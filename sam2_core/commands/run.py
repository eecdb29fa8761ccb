"""`sam2kf run --local`: the whole fine-tuning pipeline on this machine through kfp.local."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the Kubeflow pipeline (extract -> shard -> train -> evaluate challenger and champion "
        "-> promote) locally with kfp.local's subprocess runner: no cluster, no Docker. Defaults: "
        "the built-in demo data, the tiny model, 2 local training processes (torchrun), CPU. "
        "Prints where every artifact went. For a cluster use `sam2kf compile|submit|schedule`."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  sam2kf run --local\n"
        "  sam2kf run --local --out ./runs/demo --max-steps 20\n"
        "  sam2kf run --local --data-partitions 3   (extract + shard fan out, then commit)\n"
        "  sam2kf run --local --raw-uri /data/sav_raw --model sam2.1_hiera_t --experiment sav_finetune\n"
        "Run it twice with the same --out: the second run warm-starts from the champion and, with\n"
        "no new videos in --raw-uri, stops after the extract (and commit) step."
    )
    parser.add_argument(
        "--local", action="store_true", help="run on this machine (required: the only mode)"
    )
    parser.add_argument(
        "--out", default="./sam2kf-local", help="output folder (default ./sam2kf-local)"
    )
    parser.add_argument(
        "--raw-uri", default="", help="raw SA-V videos (default: generate the demo data)"
    )
    parser.add_argument(
        "--registry-uri", default="", help="model registry (default <out>/registry)"
    )
    parser.add_argument("--demo-videos", type=int, default=6, help="demo videos to generate")
    parser.add_argument(
        "--demo-frames", type=int, default=24, help="frames per demo video (24 fps)"
    )
    parser.add_argument("--model", default="tiny", help="model config name (default tiny)")
    parser.add_argument("--experiment", default="smoke", help="training experiment (default smoke)")
    parser.add_argument("--overrides", default="", help="extra Hydra overrides for sam2kf train")
    parser.add_argument("--nproc-per-node", type=int, default=2, help="local training processes")
    parser.add_argument(
        "--max-steps", type=int, default=0, help="training steps (0 = experiment default)"
    )
    parser.add_argument("--dataset-name", default="demo")
    parser.add_argument("--dataset-version", default="auto", help="'auto' = one version per run")
    parser.add_argument(
        "--min-jf-gain", type=float, default=0.0, help="promotion margin in J&F points"
    )
    parser.add_argument(
        "--eval-max-videos", type=int, default=0, help="cap evaluated videos (0 = all)"
    )
    parser.add_argument(
        "--data-partitions",
        type=int,
        default=1,
        help="extract and shard as N partitions of the videos (the pipeline's fan-out), "
        "then commit them into one dataset version (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.local:
        print(
            "sam2kf run: only --local is supported here; on a cluster use `sam2kf submit --host URL` "
            "or upload the output of `sam2kf compile` in the KFP UI",
            file=sys.stderr,
        )
        return 2
    if args.data_partitions < 1:
        print(
            f"sam2kf run: --data-partitions must be >= 1, got {args.data_partitions}",
            file=sys.stderr,
        )
        return 2
    from pipelines.local_run import LocalRunConfig, describe, run_local

    result = run_local(
        LocalRunConfig(
            out=args.out,
            raw_uri=args.raw_uri,
            registry_uri=args.registry_uri,
            demo_videos=args.demo_videos,
            demo_frames=args.demo_frames,
            model_name=args.model,
            experiment=args.experiment,
            overrides=args.overrides,
            nproc_per_node=args.nproc_per_node,
            max_steps=args.max_steps,
            dataset_name=args.dataset_name,
            dataset_version=args.dataset_version,
            min_jf_gain=args.min_jf_gain,
            eval_max_videos=args.eval_max_videos,
            data_partitions=args.data_partitions,
            verbose=args.verbose,
        )
    )
    print(describe(result))
    return 0
