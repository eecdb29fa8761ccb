"""Meta's own SAM 2.1 training step (sam2 1.1.0: ``training.model.sam2.SAM2Train``, the official
``MultiStepMultiMasksAndIous`` loss, ``torch.optim.AdamW``, gradient clipping at 0.1), timed on
the batches that ``benchmarks/train_step.py`` times ours on. Runs in the environment made by
``benchmarks/reference/setup_env.sh``; not importable from this repository's environment.

    <ref-venv>/bin/python benchmarks/reference/meta_train_step.py BATCHES.pt STEPS THREADS

The model is the official MOSE fine-tuning config (``sam2.1_hiera_b+_MOSE_finetune.yaml``,
every training flag as shipped) with the trunk and neck changed to hiera_t's sizes (the
``sam2.1_hiera_t.yaml`` values) and the resolution set to the batches' size. Prints one JSON
line: wall and CPU seconds of every timed step (after one untimed warm-up step).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from meta_common import HIERA_T, MOSE, datapoint  # this folder (the script's sys.path[0])


def main() -> int:
    batches_path, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if threads > 0:
        torch.set_num_threads(threads)
    import sam2  # noqa: F401  (registers its config module with Hydra)
    from hydra import compose
    from hydra.utils import instantiate

    saved = torch.load(batches_path, weights_only=True)
    res = int(saved[0]["img_batch"].shape[-1])
    cfg = compose(
        config_name=MOSE,
        overrides=[f"scratch.resolution={res}", *HIERA_T],
    )
    torch.manual_seed(0)
    model = instantiate(cfg.trainer.model, _recursive_=True).train()
    loss_fn = instantiate(cfg.trainer.loss.all)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-6, weight_decay=0.1)

    data = [datapoint(b, dict_key="bench") for b in saved]
    walls: list[float] = []
    cpus: list[float] = []
    torch.manual_seed(1)
    for i, batch in enumerate(data[: steps + 1]):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        outs = model(batch)
        loss = loss_fn(outs, batch.masks)["core_loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        if i > 0:  # the first step is a warm-up
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    print(
        json.dumps(
            {
                "s_each_step": walls,
                "cpu_s_each_step": cpus,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "pid": os.getpid(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
