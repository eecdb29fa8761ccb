"""Run under torchrun: a few training steps, then dump this rank's parameters (for test_ddp)."""

from __future__ import annotations

import sys

import torch


def main() -> None:
    out = sys.argv[1]
    overrides = sys.argv[2:]
    from sam2_core.train import distributed as D
    from sam2_core.train.config import load_train_config
    from sam2_core.train.trainer import Trainer

    cfg = load_train_config([f"trainer.output_dir={out}", *overrides])
    info = D.init_distributed(cfg.trainer.device)
    try:
        trainer = Trainer(cfg, info)
        summary = trainer.run()
        params = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
        torch.save(
            {"params": params, "world_size": info.world_size, "step": summary["step"]},
            f"{out}/rank{info.rank}.pt",
        )
    finally:
        D.cleanup()


if __name__ == "__main__":
    main()
