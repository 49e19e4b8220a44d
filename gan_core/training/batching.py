"""Which images each rank trains on at each step: shuffled epochs, sharded per rank, derived from the step alone.

    batches = EpochBatches(num_images=5000, batch_size=64, seed=0, rank=0, world_size=2)
    idx = batches.indices(k)        # (64,) image indices for the k-th D batch on this rank

Like DistributedSampler (seeded per-epoch permutation, disjoint per-rank shards, last partial batch dropped), but
addressed by batch number instead of iterated, so a resumed run picks up exactly where the killed one stopped.
"""

from __future__ import annotations

import torch

from gan_core.errors import UserError


class EpochBatches:
    def __init__(self, num_images: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu"):
        global_batch = batch_size * world_size
        if num_images < global_batch:
            raise UserError(
                f"dataset has {num_images} images, fewer than one batch of {global_batch} "
                f"(train.batch_size={batch_size} x {world_size} ranks); lower train.batch_size or prepare more images"
            )
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.batches_per_epoch = num_images // global_batch
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def indices(self, k: int) -> torch.Tensor:
        """Image indices (batch_size,) of the k-th batch for this rank, on `device`."""
        epoch, j = divmod(k, self.batches_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_images, generator=g).to(self.device)  # (N,)
            self._epoch = epoch
        start = (j * self.world_size + self.rank) * self.batch_size
        return self._perm[start : start + self.batch_size]
