"""Data: any source → one prepared dataset directory of shards (incremental, deterministic, atomic), read back a
batch at a time.

    meta = prepare(cfg.data)                      # writes cfg.data.prepared_dir, returns meta.json's dict
    ds = load_prepared("data/prepared")           # len(ds), ds.shape, ds.labels int64 (N,) | None, ds.take(indices)
    feed = training_images(ds, device)            # where training reads batches from: device, memory or the shards

sources (data.source kinds and the folder walk), images (strict decoding and fitting), prepare (building the
directory, reusing the previous one), shards (one shard's files), prepared (the manifest and the reader), feed
(batches for training: on the device, in memory, or streamed with prefetch), hashcache (file hashes remembered by
stat), version (the DVC md5 that is the data version).
"""

from gan_core.data.prepare import prepare
from gan_core.data.prepared import PreparedDataset, holdout_split, load_domains, load_prepared, read_meta

__all__ = ["PreparedDataset", "holdout_split", "load_domains", "load_prepared", "prepare", "read_meta"]
