"""Where training reads its real batches from, decided once per image set by its size and the device:

    feed = training_images(dataset, device)   # ResidentImages or StreamedImages
    x = feed.take(idx)                        # uint8 (B, C, H, W) on `device`; idx on feed.device
    feed.prefetch(next_idx)                   # StreamedImages on CUDA: read the next batch meanwhile

* On an accelerator, a set up to ON_DEVICE_BYTES lives there whole (copied shard by shard, never whole on the
  host): a batch is one gather with no host→device copy.
* On the CPU, a set up to IN_MEMORY_BYTES is read into memory whole: a batch is one gather.
* Larger sets are streamed: each batch reads just its rows from the shards (prepared.PreparedDataset.take), so
  memory stays flat however large the collection; on CUDA the next batch is read in a background thread into
  pinned memory and copied asynchronously.
Every kind gives the same bytes for the same indices, so the choice never changes the weights.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from gan_core.data.prepared import IN_MEMORY_BYTES, PreparedDataset

ON_DEVICE_BYTES = 1 << 30
"""Image sets up to this size live on the accelerator."""


class ResidentImages:
    """The whole set as one uint8 tensor (N, C, H, W) on `device` (an accelerator, or host memory)."""

    def __init__(self, images: torch.Tensor):
        self.images = images
        self.device = images.device

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx.to(self.device)]

    def prefetch(self, idx: torch.Tensor) -> None:
        """Nothing to do: a gather needs no preparation."""


class StreamedImages:
    """A batch's rows read from the shards on demand; on CUDA through two pinned buffers, the next batch read in a
    background thread while the current one trains (indices live on the CPU)."""

    def __init__(self, dataset: PreparedDataset, target: torch.device):
        self.dataset, self.target = dataset, target
        self.device = torch.device("cpu")
        self.cuda = target.type == "cuda"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ganops-prefetch") if self.cuda else None
        self._pending: tuple[bytes, Future] | None = None
        self._buffers: list[torch.Tensor] = []
        self._copied: list[torch.cuda.Event | None] = []
        self._turn = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, idx: np.ndarray) -> tuple[torch.Tensor, int]:
        """(the rows, host memory; the pinned buffer's slot holding them, -1 on the CPU)."""
        if not self.cuda:
            return self.dataset.take(idx), -1
        # Two pinned buffers in turn: one being filled while the other's copy to the GPU may still run.
        slot = self._turn % 2
        self._turn += 1
        shape = (len(idx), *self.dataset.shape)
        if len(self._buffers) < 2:
            self._buffers.append(torch.empty(shape, dtype=torch.uint8, pin_memory=True))
            self._copied.append(None)
        if tuple(self._buffers[slot].shape) != shape:
            self._buffers[slot] = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        event = self._copied[slot]
        if event is not None:
            event.synchronize()  # its previous batch has reached the GPU
        return self.dataset.take(idx, out=self._buffers[slot].numpy()), slot

    def prefetch(self, idx: torch.Tensor) -> None:
        if self._pool is None:
            return
        ids = idx.cpu().numpy()
        self._pending = (ids.tobytes(), self._pool.submit(self._read, ids))

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        ids = idx.cpu().numpy()
        if self._pending is not None and self._pending[0] == ids.tobytes():
            host, slot = self._pending[1].result()
        else:
            if self._pending is not None:
                self._pending[1].result()  # never two reads into the buffers at once
            host, slot = self._read(ids)
        self._pending = None
        if not self.cuda:
            return host
        x = host.to(self.target, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._copied[slot] = event
        return x


def training_images(dataset: PreparedDataset, device: torch.device) -> ResidentImages | StreamedImages:
    """The feed for `dataset` on `device` (see the module docstring for the rule)."""
    if device.type != "cpu" and dataset.nbytes <= ON_DEVICE_BYTES:
        return ResidentImages(to_device(dataset, device))
    if device.type == "cpu" and dataset.nbytes <= IN_MEMORY_BYTES:
        return ResidentImages(dataset.images)
    return StreamedImages(dataset, device)


def to_device(dataset: PreparedDataset, device: torch.device) -> torch.Tensor:
    """The whole set on `device`, uint8 (N, C, H, W) in load order, copied one shard at a time."""
    images = torch.empty((len(dataset), *dataset.shape), dtype=torch.uint8, device=device)
    for where, block in dataset.blocks():
        images[torch.from_numpy(where).to(device)] = torch.from_numpy(block).to(device)
    return images
