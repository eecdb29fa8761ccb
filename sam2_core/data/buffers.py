"""Output tensors for training batches: reused in the consuming process, shared memory in
DataLoader workers."""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info


class BufferPool:
    """Output tensors for batches, allocated where they cost least.

    A 1024 px clip of 8 frames is 100 MB of float32: touching freshly mapped memory of that size
    costs about as much as warping two frames. So:

    * in the process that consumes the batches (``num_workers=0``), a buffer is reused once
      nothing references its storage any more (the trainer dropped the batch and every view of
      it); at most ``per_shape`` buffers per shape are kept, which covers ``for batch in
      loader`` holding the previous batch while the next one is built.
    * in a DataLoader worker, a buffer is allocated in shared memory, which is where the batch
      has to go anyway: sending it to the trainer then costs no copy. Never reused there (the
      trainer process may still read it).
    """

    def __init__(self, per_shape: int = 2, max_shapes: int = 8) -> None:
        self.per_shape = per_shape
        self.max_shapes = max_shapes
        self._bufs: dict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}
        self.reused = 0
        self.allocated = 0

    def get(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` and ``dtype``."""
        self.allocated += 1
        if get_worker_info() is not None:
            return _shared_empty(shape, dtype)
        key = (tuple(shape), dtype)
        pool = self._bufs.pop(key, [])
        self._bufs[key] = pool  # most recently used last
        for buf in pool:
            if _unreferenced(buf):
                self.reused += 1
                self.allocated -= 1
                return buf.view(shape)  # a new tensor object: its life marks the buffer busy
        buf = torch.empty(shape, dtype=dtype)
        if len(pool) < self.per_shape:
            pool.append(buf)
        while len(self._bufs) > self.max_shapes:
            self._bufs.pop(next(iter(self._bufs)))
        return buf.view(shape)


def _unreferenced(buf: torch.Tensor) -> bool:
    """Whether only the pool's own tensor (plus the temporary storage handle) holds ``buf``'s
    storage. Without the private counter, buffers are simply never reused."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return False
    return int(count(buf.untyped_storage()._cdata)) <= 2


def _shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (what ``default_collate`` does in workers)."""
    numel = 1
    for d in shape:
        numel *= int(d)
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    out = torch.empty(0, dtype=dtype).set_(storage)
    return out.view(-1)[:numel].view(shape)
