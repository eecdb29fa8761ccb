"""Distributed set-up from the environment (torchrun / PyTorchJob), the only torch.distributed user.

torchrun and the Kubeflow PyTorchJob operator both export ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. A plain ``python`` run without them is world
size 1 and takes the *same* code path: a one-process gloo/nccl group on a private FileStore, DDP
and all-reduces included, so single-process runs exercise what multi-node runs do.
"""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from e


def training_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if device not in DEVICE_CHOICES:
        raise ValueError(f"trainer.device={device!r}; allowed values: {', '.join(DEVICE_CHOICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but CUDA is not available on this machine")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(
    device: str = "auto", *, backend: str | None = None, timeout_min: float = 30.0
) -> DistInfo:
    """Initialise the process group from the environment (idempotent)."""
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    dev = training_device(device, local_rank)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=timeout_min)
        if world_size > 1 or "MASTER_ADDR" in os.environ:
            for var in ("MASTER_ADDR", "MASTER_PORT"):
                if var not in os.environ:
                    raise RuntimeError(
                        f"WORLD_SIZE={world_size} but {var} is not set; launch with torchrun "
                        "or a PyTorchJob, which set RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT"
                    )
            dist.init_process_group(
                backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout
            )
        else:
            # One process: a private file store (no port to pick, nothing to collide with).
            fd, path = tempfile.mkstemp(prefix="sam2kf-pg-")
            os.close(fd)
            os.remove(path)
            store = dist.FileStore(path, 1)
            dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
        log.info(
            "process group: backend=%s rank=%d/%d local_rank=%d device=%s",
            backend,
            rank,
            world_size,
            local_rank,
            dev,
        )
    return DistInfo(rank, local_rank, world_size, dev, backend)


def wrap_ddp(
    module: nn.Module, info: DistInfo, *, find_unused_parameters: bool = True
) -> nn.Module:
    """DDP wrapper (unused parameters happen: mask-prompt frames skip the prompt encoder)."""
    kwargs: dict[str, Any] = {"find_unused_parameters": find_unused_parameters}
    if info.device.type == "cuda":
        kwargs["device_ids"] = [info.device.index]
        kwargs["output_device"] = info.device.index
    return nn.parallel.DistributedDataParallel(module, **kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of scalar dicts over ranks (same keys on every rank)."""
    if not values or not (dist.is_available() and dist.is_initialized()):
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def all_gather_padded(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate every rank's tensors along dim 0, in rank order; sizes may differ per rank.

    Each argument is ``[N_r, ...]`` with the same ``N_r`` for all arguments of one rank and the
    same trailing shape and dtype on every rank. Collectives need equal shapes, so the row
    counts are exchanged first, every tensor is zero-padded to the largest count, gathered, and
    the padding is cut off again. Without a process group (or world size 1) the inputs come back.
    """
    if not tensors:
        return ()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(tensors)
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError("all_gather_padded: the tensors of one rank need the same row count")
    world = dist.get_world_size()
    device = tensors[0].device
    count = torch.tensor([n], device=device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    if longest == 0:  # nothing anywhere (zero-size collectives are not portable)
        return tuple(tensors)
    out = []
    for t in tensors:
        t = t.contiguous()
        padded = t.new_zeros((longest, *t.shape[1:]))
        padded[:n] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:k] for p, k in zip(parts, sizes)], dim=0))
    return tuple(out)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
