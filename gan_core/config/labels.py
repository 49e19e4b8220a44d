"""Does a data source carry class labels? Answered at config time, from the source's name and, for a folder, one
listing of its top level: no image is opened, so a config can route or refuse before anything is prepared.

    source_labelled("mnist5k")            # True
    source_labelled("folder:shots")       # False for a flat folder, True with class subfolders
    source_labelled("torchvision:CIFAR10")   # None: known only once the dataset is read

It follows gan_core.data.sources' folder walk: a class folder is a sub-folder that is neither hidden nor a symlink
(the walk follows neither). A folder that does not exist or cannot be listed is unknown (None): `prepare` names the
problem.
"""

from __future__ import annotations

import os

LABELLED_BUILTINS = ("mnist5k", "digits")


def source_labelled(source: str) -> bool | None:
    """True when `source` (a data.source value) is labelled, False when it is not, None when config time cannot
    tell (torchvision datasets, missing folders)."""
    kind, _, arg = source.partition(":")
    if source in LABELLED_BUILTINS:
        return True
    if kind == "folder":
        return _has_class_folders(arg)
    return None


def _has_class_folders(path: str) -> bool | None:
    """One pass over the folder's top level, stopping at the first class folder; file types come from the
    directory entries (no stat per file on most filesystems), so a flat folder of a million images costs
    about a second."""
    try:
        with os.scandir(path) as entries:
            return any(not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False) for entry in entries)
    except OSError:  # missing, a file, unreadable: prepare says which
        return None
