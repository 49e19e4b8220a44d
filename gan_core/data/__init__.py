"""Data: any source → one prepared dataset directory (deterministic, atomic), and reading it back.

    meta = prepare(cfg.data)                      # writes cfg.data.prepared_dir, returns meta.json's dict
    ds = load_prepared("data/prepared")           # ds.images uint8 (N, C, H, W), ds.labels int64 (N,) | None

sources (data.source kinds and the folder walk), images (strict decoding and fitting), prepare (building the
directory), prepared (the on-disk format and its readers), version (the DVC md5 that is the data version).
"""

from gan_core.data.prepare import prepare
from gan_core.data.prepared import PreparedDataset, holdout_split, load_domains, load_prepared, read_meta

__all__ = ["PreparedDataset", "holdout_split", "load_domains", "load_prepared", "prepare", "read_meta"]
