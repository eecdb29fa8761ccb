"""`sam2kf export`: write a model checkpoint in Meta's official ``{"model": state_dict}`` format."""

from __future__ import annotations

import argparse

from sam2_core.commands.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Validate a checkpoint against a SAM 2.1 model configuration (every key and shape must "
        "match exactly) and write it as {'model': state_dict} with float32 tensors, the format "
        "of Meta's released checkpoints: the result loads with sam2.build_sam.build_sam2() and "
        "with sam2_core.model.build_model(NAME, checkpoint=OUT). Reading uses "
        "torch.load(weights_only=True); writing is atomic (no partial file on failure)."
    )
    parser.epilog = (
        "examples:\n"
        "  sam2kf export --model sam2.1_hiera_b+ --checkpoint runs/r1/model_final.pt --out ft.pt\n"
        "  sam2kf export --model sam2.1_hiera_t --checkpoint runs/r1/checkpoints/step-000500 \\\n"
        "      --out gs://bucket/models/sam2.1_t_ft.pt\n"
        "  sam2kf export --model sam2.1_hiera_t --checkpoint sam2.1_hiera_tiny.pt --out copy.pt"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model",
        required=True,
        help="model config: sam2.1_hiera_t, sam2.1_hiera_s, sam2.1_hiera_b+, sam2.1_hiera_l, "
        "tiny, or a path to a model YAML",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="IN",
        help="input: official .pt, an exported .pt, a training checkpoint file or step "
        "directory, or .safetensors (local path or fsspec URL)",
    )
    parser.add_argument("--out", required=True, metavar="OUT.pt", help="output file or URL")


def run(args: argparse.Namespace) -> int:
    from sam2_core.model.build import convert_checkpoint

    # CheckpointError (a ValueError) and missing files: one line, exit 2 (sam2_core.cli).
    try:
        s = convert_checkpoint(model=args.model, src=args.checkpoint, out=args.out)
    except Exception as e:
        # safetensors' own error type (a garbage .safetensors file) is not a ValueError.
        if type(e).__name__ != "SafetensorError":
            raise
        raise InputError(
            f"--checkpoint {args.checkpoint}: not a readable safetensors file ({e}); give a "
            ".pt/.safetensors checkpoint or a released model name"
        ) from None
    print(f"wrote {s.out}: model {s.model}, {s.num_keys} tensors, {s.num_params:,} parameters")
    return 0
