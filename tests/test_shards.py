"""The sharded prepared format and incremental prepare: cost follows the change, shards that did not change stay
byte-identical (the same files), damage is named on one line, and old datasets say to prepare again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_core.config import DataConfig
from gan_core.data import load_domains, load_prepared, prepare
from gan_core.data.version import data_version, dvc_dir_md5
from gan_core.errors import UserError


def _image(path: Path, seed: int, size: int = 12) -> Path:
    """A small RGB PNG of seeded noise (every file different)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _folder(root: Path, per_class: dict[str, range]) -> Path:
    for name, seeds in per_class.items():
        for seed in seeds:
            _image(root / name / f"{seed:04d}.png", seed)
    return root


def _config(tmp_path: Path, src: Path, **fields: object) -> DataConfig:
    settings = {"resolution": 8, "channels": 3, "shard_images": 10, **fields}
    return DataConfig(source=f"folder:{src}", prepared_dir=str(tmp_path / "prepared"), **settings)


def _shard_files(prepared: Path) -> dict[str, tuple[bytes, int]]:
    """{shards/<file>: (bytes, inode)}: the inode tells a file kept (hard-linked) from one written again."""
    return {p.relative_to(prepared).as_posix(): (p.read_bytes(), p.stat().st_ino)
            for p in sorted((prepared / "shards").iterdir())}


def _by_name(prepared: Path) -> dict[str, tuple[bytes, int | None]]:
    """{source file: (its fitted pixels, its label)} of a prepared dataset, whatever its layout."""
    ds = load_prepared(prepared)
    images, labels = ds.images.numpy(), ds.labels
    names = []
    for shard in ds.meta["shards"]:
        rows = json.loads((prepared / "shards" / f"{shard['id']:06d}.rows.json").read_text())["rows"]
        names += [name for name, _ in rows]
    stored = np.asarray(names)[ds.order]  # load order → name
    return {str(name): (images[i].tobytes(), None if labels is None else int(labels[i]))
            for i, name in enumerate(stored)}


class DecodeCounter:
    """Counts the images decoded (gan_core.data.sources.decode_image calls) during a prepare."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import gan_core.data.sources as sources

        self.calls = 0
        real = sources.decode_image

        def counting(data: bytes, cfg: DataConfig) -> np.ndarray:
            self.calls += 1
            return real(data, cfg)

        monkeypatch.setattr(sources, "decode_image", counting)


# ----------------------------------------------------------------------------- fresh prepare
def test_a_fresh_prepare_is_shards_in_source_order_read_in_a_seeded_permutation(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 13), "dog": range(100, 112)})
    meta = prepare(_config(tmp_path, src))
    prepared = tmp_path / "prepared"
    assert [s["count"] for s in meta["shards"]] == [10, 10, 5] and [s["id"] for s in meta["shards"]] == [0, 1, 2]
    rows = json.loads((prepared / "shards" / "000000.rows.json").read_text())["rows"]
    assert [name for name, _ in rows] == [f"cat/{i:04d}.png" for i in range(10)]  # sorted by relative path
    ds = load_prepared(prepared)
    assert len(ds) == 25 and ds.shape == (3, 8, 8)
    # The load order is a seed-0 permutation of the stored rows: both classes in the first rows.
    assert ds.order.tolist() == np.random.default_rng(0).permutation(25).tolist()
    assert set(ds.labels[:6].tolist()) == {0, 1}
    # Same input, same bytes; a second prepare of an unchanged folder decodes nothing and changes no file.
    again = tmp_path / "again"
    prepare(_config(again, src))
    assert {k: v[0] for k, v in _shard_files(again / "prepared").items()} == \
        {k: v[0] for k, v in _shard_files(prepared).items()}
    assert (again / "prepared" / "meta.json").read_bytes() == (prepared / "meta.json").read_bytes()


# ----------------------------------------------------------------------------- incremental prepare
def test_adding_images_keeps_every_shard_and_decodes_only_the_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 13), "dog": range(100, 112)})
    cfg = _config(tmp_path, src)
    prepare(cfg)
    prepared = tmp_path / "prepared"
    before, version = _shard_files(prepared), data_version(prepared)

    counter = DecodeCounter(monkeypatch)
    unchanged = prepare(cfg)
    assert counter.calls == 0 and _shard_files(prepared) == before and data_version(prepared) == version

    _folder(src, {"cat": range(13, 16), "dog": range(112, 116)})  # 7 new images, in both classes
    meta = prepare(cfg)
    assert counter.calls == 7
    after = _shard_files(prepared)
    assert {k: v for k, v in after.items() if k in before} == before  # same bytes, same inodes: nothing rewritten
    assert [s["count"] for s in meta["shards"]] == [10, 10, 5, 7] and meta["shards"][-1]["id"] == 3
    new_rows = json.loads((prepared / "shards" / "000003.rows.json").read_text())["rows"]
    assert [name for name, _ in new_rows] == [f"cat/{i:04d}.png" for i in range(13, 16)] + \
        [f"dog/{i:04d}.png" for i in range(112, 116)]
    assert meta["class_counts"] == {"cat": 16, "dog": 16} and meta["count"] == 32
    assert data_version(prepared) != version and unchanged["count"] == 25
    # The same images and labels as a fresh prepare of the grown folder (a different layout, the same content).
    fresh = tmp_path / "fresh"
    prepare(_config(fresh, src))
    assert _by_name(prepared) == _by_name(fresh / "prepared")


def test_removing_or_changing_a_file_rewrites_only_the_shard_that_held_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 13), "dog": range(100, 112)})
    cfg = _config(tmp_path, src)
    prepare(cfg)
    prepared = tmp_path / "prepared"
    before = _shard_files(prepared)

    (src / "cat" / "0003.png").unlink()  # in shard 0
    _image(src / "dog" / "0105.png", seed=9999)  # changed content, in shard 1
    counter = DecodeCounter(monkeypatch)
    meta = prepare(cfg)
    assert counter.calls == 1  # the changed file; the rewritten shards' other rows come from their own pixels
    after = _shard_files(prepared)
    assert {k: v for k, v in after.items() if k.startswith("shards/000002.")} == \
        {k: v for k, v in before.items() if k.startswith("shards/000002.")}  # untouched shard: the same files
    assert not any(k.startswith(("shards/000000.", "shards/000001.")) for k in after)
    # Rewritten in place (new ids 3 and 4 in the old ones' positions), the changed file appended as shard 5.
    assert [(s["id"], s["count"]) for s in meta["shards"]] == [(3, 9), (4, 9), (2, 5), (5, 1)]
    assert json.loads((prepared / "shards" / "000005.rows.json").read_text())["rows"][0][0] == "dog/0105.png"
    fresh = tmp_path / "fresh"
    prepare(_config(fresh, src))
    assert _by_name(prepared) == _by_name(fresh / "prepared")


def test_a_new_class_folder_rewrites_labels_but_keeps_every_image_file(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 10), "dog": range(100, 110)})
    cfg = _config(tmp_path, src)
    prepare(cfg)
    prepared = tmp_path / "prepared"
    before = _shard_files(prepared)
    _folder(src, {"ant": range(200, 203)})  # sorts first: every class index moves up by one
    meta = prepare(cfg)
    after = _shard_files(prepared)
    for name in before:
        if name.endswith(".labels.npy"):
            assert after[name][0] != before[name][0]
        else:
            assert after[name] == before[name]
    assert meta["classes"] == ["ant", "cat", "dog"] and meta["class_counts"] == {"ant": 3, "cat": 10, "dog": 10}
    fresh = tmp_path / "fresh"
    prepare(_config(fresh, src))
    assert _by_name(prepared) == _by_name(fresh / "prepared")


def test_other_settings_reuse_nothing_and_equal_a_fresh_prepare(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 12), "dog": range(100, 110)})
    prepare(_config(tmp_path, src))
    prepare(_config(tmp_path, src, channels=1, resolution=10))
    fresh = tmp_path / "fresh"
    prepare(_config(fresh, src, channels=1, resolution=10))
    assert {k: v[0] for k, v in _shard_files(tmp_path / "prepared").items()} == \
        {k: v[0] for k, v in _shard_files(fresh / "prepared").items()}
    assert (tmp_path / "prepared" / "meta.json").read_bytes() == (fresh / "prepared" / "meta.json").read_bytes()


def test_a_renamed_file_is_copied_from_its_shard_not_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 5)})
    cfg = _config(tmp_path, src)
    prepare(cfg)
    (src / "cat" / "0002.png").rename(src / "cat" / "renamed.png")
    counter = DecodeCounter(monkeypatch)
    prepare(cfg)
    assert counter.calls == 0
    fresh = tmp_path / "fresh"
    prepare(_config(fresh, src))
    assert _by_name(tmp_path / "prepared") == _by_name(fresh / "prepared")


def test_translation_domains_are_prepared_incrementally_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _folder(tmp_path / "a_imgs", {"x": range(0, 6), "y": range(10, 16)})
    b = _folder(tmp_path / "b_imgs", {"x": range(20, 26), "y": range(30, 36)})
    cfg = _config(tmp_path, a).model_copy(update={"target": f"folder:{b}"})
    prepare(cfg)
    before = {d: _shard_files(tmp_path / "prepared" / d) for d in "ab"}
    _folder(b, {"y": range(36, 38)})
    counter = DecodeCounter(monkeypatch)
    meta = prepare(cfg)
    assert counter.calls == 2 and meta["domains"]["b"]["count"] == 14
    assert _shard_files(tmp_path / "prepared" / "a") == before["a"]
    assert {k: v for k, v in _shard_files(tmp_path / "prepared" / "b").items() if k in before["b"]} == before["b"]
    domains = load_domains(tmp_path / "prepared")
    assert len(domains["a"]) == 12 and len(domains["b"]) == 14


# ----------------------------------------------------------------------------- the data version
def test_the_data_version_is_dvcs_md5_and_reads_only_changed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    import gan_core.data.hashcache as hashcache

    src = _folder(tmp_path / "imgs", {"cat": range(0, 15)})
    prepare(_config(tmp_path, src))
    prepared = tmp_path / "prepared"
    reads: list[str] = []
    real = hashcache.file_digest
    monkeypatch.setattr(hashcache, "file_digest", lambda path, algorithm: reads.append(path.name) or real(path,
                                                                                                          algorithm))
    version = data_version(prepared)
    assert reads == []  # prepare recorded the md5s of what it wrote
    # Without the cache every file is read, and the md5 is the same.
    (tmp_path / ".prepared.md5.json").unlink()
    assert dvc_dir_md5(prepared) == version and len(reads) == 7  # meta.json + 2 shards x 3 files
    reads.clear()
    # A file changed behind the cache's back (new mtime): read again, and the version changes with it.
    labels = prepared / "shards" / "000001.labels.npy"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 1
    labels.write_bytes(bytes(data))
    assert dvc_dir_md5(prepared) != version and reads == ["000001.labels.npy"]


# ----------------------------------------------------------------------------- bad input
def test_a_damaged_shard_is_named_and_prepare_repairs_it_from_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 15)})
    cfg = _config(tmp_path, src)
    prepare(cfg)
    prepared = tmp_path / "prepared"
    shard = prepared / "shards" / "000001.images.npy"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0xFF  # one flipped pixel, same size
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"shards/000001.images.npy is damaged") as caught:
        load_prepared(prepared)
    assert "\n" not in str(caught.value) and "prepare" in str(caught.value)
    kept = _shard_files(prepared)["shards/000000.images.npy"]
    counter = DecodeCounter(monkeypatch)
    prepare(cfg)
    assert counter.calls == 5  # the damaged shard's images, from the source again
    assert _shard_files(prepared)["shards/000000.images.npy"] == kept
    assert len(load_prepared(prepared)) == 15


def test_a_manifest_that_disagrees_with_its_shards_is_named(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 15)})
    prepare(_config(tmp_path, src))
    meta_path = tmp_path / "prepared" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["count"] = 16
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="counts 16 images but its shards hold 15"):
        load_prepared(tmp_path / "prepared")
    meta["count"], meta["shards"][0]["count"], meta["shards"][1]["count"] = 15, 9, 6
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="000000.images.npy is damaged"):
        load_prepared(tmp_path / "prepared")
    (tmp_path / "prepared" / "shards" / "000001.rows.json").unlink()
    with pytest.raises(UserError, match="000001.rows.json cannot be read"):
        load_prepared(tmp_path / "prepared")


def test_a_folder_that_shrank_to_nothing_leaves_the_previous_dataset_untouched(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs", {"cat": range(0, 5)})
    cfg = _config(tmp_path, src)
    prepare(cfg)
    prepared = tmp_path / "prepared"
    before, version = _shard_files(prepared), data_version(prepared)
    for path in (src / "cat").iterdir():
        path.unlink()
    (src / "cat").rmdir()
    with pytest.raises(UserError, match="no PNG/JPEG images") as caught:
        prepare(cfg)
    assert str(src) in str(caught.value)
    assert _shard_files(prepared) == before and data_version(prepared) == version


def test_a_dataset_of_the_old_one_array_format_says_to_prepare_again(tmp_path: Path) -> None:
    old = tmp_path / "prepared"
    old.mkdir()
    np.save(old / "images.npy", np.zeros((4, 1, 8, 8), dtype=np.uint8))
    (old / "meta.json").write_text(json.dumps({"format": "ganops-prepared/1", "count": 4, "shape": [1, 8, 8],
                                               "classes": None}))
    with pytest.raises(UserError, match="older ganops") as caught:
        load_prepared(old)
    assert "prepare" in str(caught.value) and "\n" not in str(caught.value)
    src = _folder(tmp_path / "imgs", {"cat": range(0, 3)})
    prepare(_config(tmp_path, src))  # replaces it
    assert len(load_prepared(old)) == 3 and not (old / "images.npy").exists()


def test_unchanged_files_are_not_read_again_and_a_damaged_cache_only_costs_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gan_core.data.sources as sources

    src = _folder(tmp_path / "imgs", {"cat": range(0, 12)})
    cfg = _config(tmp_path, src)
    prepare(cfg)
    before = _shard_files(tmp_path / "prepared")
    hashed: list[int] = []
    real = sources.pixel_key
    monkeypatch.setattr(sources, "pixel_key", lambda *parts: hashed.append(1) or real(*parts))
    counter = DecodeCounter(monkeypatch)
    prepare(cfg)
    assert hashed == [] and counter.calls == 0  # size, mtime and inode unchanged: no file was read
    # Same bytes, new mtime: read and hashed again, found unchanged, not decoded.
    touched = src / "cat" / "0004.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    prepare(cfg)
    assert len(hashed) == 1 and counter.calls == 0
    # A damaged cache is ignored: every file is read (hashed) once more, still nothing decoded.
    hashed.clear()
    (tmp_path / ".prepared.sources.npz").write_bytes(b"garbage")
    prepare(cfg)
    assert len(hashed) == 12 and counter.calls == 0 and _shard_files(tmp_path / "prepared") == before
