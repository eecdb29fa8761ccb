"""`sam2kf train`: fine-tune SAM 2.1 with Hydra overrides (torchrun / PyTorchJob aware)."""

from __future__ import annotations

import argparse
import json
import os

from sam2_core.commands.errors import InputError, one_line

EPILOG = """\
overrides (Hydra, key=value; any config value can be overridden):
  experiment=smoke|mose_finetune|sav_finetune   a whole recipe
  model=sam2.1_hiera_t|sam2.1_hiera_s|sam2.1_hiera_b+|sam2.1_hiera_l|tiny
  model.checkpoint=<path|url>      initial weights (official {"model": sd}), strict
  data.raw=<url> | data.shards=<url>   training data (data=raw|shards|demo|synthetic)
  data.val=<url>                   validation data for J&F during training
  trainer.output_dir=<url>         checkpoints/, tensorboard/, train_stats.jsonl, model_final.pt
  trainer.max_steps=<int>  trainer.device=auto|cpu|cuda  trainer.val_every=<int>
  optim.base_lr=<float>  optim.vision_lr=<float>  optim.freeze='[image_encoder.*]'

examples:
  sam2kf train experiment=smoke
  sam2kf train experiment=mose_finetune data.raw=/data/MOSE model.checkpoint=sam2.1_hiera_base_plus.pt
  torchrun --nproc-per-node 8 -m sam2_core.cli train experiment=sav_finetune data.shards=gs://b/sav/v1

A restarted job resumes automatically from the newest complete checkpoint in
<output_dir>/checkpoints (a corrupt newest checkpoint falls back to the previous one).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="compose the config, build model, optimizer and data loader, then exit",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the composed config (YAML) and exit"
    )


def run(args: argparse.Namespace) -> int:
    from sam2_core.train.config import ConfigError, compose_config, to_train_config

    try:
        composed = compose_config(args.overrides)
        if args.print_config:
            from omegaconf import OmegaConf, open_dict

            with open_dict(composed):
                del composed["hydra"]
            print(OmegaConf.to_yaml(composed))
            return 0
        cfg = to_train_config(composed)
    except ConfigError as e:  # one line, whatever Hydra's message looks like
        raise InputError(one_line(str(e))) from None
    from sam2_core.eval.vos import validate_in_memory
    from sam2_core.train.trainer import run_training

    # ConfigError/DataError (ValueErrors: e.g. the output folder holds a different run, missing
    # shards): one line, exit 2; a diverged run (NonFiniteLossError): exit 1 (sam2_core.cli).
    summary = run_training(cfg, dry_run=args.dry_run, validate=validate_in_memory)
    # One summary per job, not one per process (the local demo showed each rank's copy).
    if os.environ.get("RANK", "0") in ("", "0"):
        print(json.dumps(summary, default=str))
    return 0
