"""Damaged, edited and hostile generator packages, and bad `ganops generate` requests: each is one UserError that
names the file (or value) and what to do, raised before anything is allocated, imported or written."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gan_core.errors import UserError
from gan_core.packaging.generator import MAX_SPEC_BYTES, SPEC_FILE, WEIGHTS_FILE, load_generator, sample_images
from gan_core.serving.generate import MAX_IMAGES, generate_grid


@pytest.fixture
def package(generator_package: Path, tmp_path: Path) -> Path:
    """A private copy of the session's valid conditional DCGAN package (16 px, 10 classes), free to damage."""
    return Path(shutil.copytree(generator_package, tmp_path / "pkg"))


def _edit_spec(package: Path, edit: Callable[[dict], object]) -> None:
    spec = json.loads((package / SPEC_FILE).read_text())
    replaced = edit(spec)
    (package / SPEC_FILE).write_text(json.dumps(spec if replaced is None else replaced))


def _raises_naming(path: Path, match: str, source: Path) -> UserError:
    with pytest.raises(UserError, match=match) as info:
        load_generator(source)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    return info.value


# ----------------------------------------------------------------------------- damaged files
def test_truncated_weights(package: Path) -> None:
    weights = package / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _raises_naming(weights, "unreadable safetensors file.*cut short or damaged.*re-export", package)


def test_cut_short_spec(package: Path) -> None:
    spec = package / SPEC_FILE
    spec.write_bytes(spec.read_bytes()[:40])
    _raises_naming(spec, "not valid JSON.*cut short", package)


def test_missing_weights(package: Path) -> None:
    (package / WEIGHTS_FILE).unlink()
    _raises_naming(package / WEIGHTS_FILE, "missing; the package is incomplete", package)


def test_missing_spec(package: Path) -> None:
    (package / SPEC_FILE).unlink()
    _raises_naming(package, "no generator package", package)


def test_weights_holding_nan(package: Path) -> None:
    weights = package / WEIGHTS_FILE
    state = load_file(weights)
    first = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[first][0] = float("nan")
    save_file(state, weights)
    _raises_naming(weights, f"tensor '{first}' holds NaN", package)


def test_weights_file_of_garbage_fails_fast(package: Path) -> None:
    weights = package / WEIGHTS_FILE
    with weights.open("wb") as f:  # 4 GiB, sparse: costs no disk, and must not be read
        f.write(os.urandom(64))
        f.truncate(4 << 30)
    started = time.monotonic()
    _raises_naming(weights, "unreadable safetensors file", package)
    # Reading 4 GiB takes tens of seconds here; the header check takes milliseconds.
    assert time.monotonic() - started < 5


def test_weights_header_claiming_more_bytes_than_the_file_holds(package: Path) -> None:
    weights = package / WEIGHTS_FILE
    header = json.dumps({"net.0.weight": {"dtype": "F32", "shape": [100_000, 100_000],
                                          "data_offsets": [0, 40_000_000_000]}}).encode()
    weights.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    _raises_naming(weights, "unreadable safetensors file", package)


def test_weights_header_claiming_huge_tensors_is_refused_before_reading(package: Path) -> None:
    """A file that really is as large as its header says (sparse, 40 GB): compared with the network's shapes
    before a byte of it is read, so nothing is allocated."""
    names = sorted(load_file(package / WEIGHTS_FILE))
    weights = package / WEIGHTS_FILE
    big = 10_000_000_000
    small = names[1:]
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(small)}
    start = 4 * len(small)
    header[names[0]] = {"dtype": "F32", "shape": [big], "data_offsets": [start, start + 4 * big]}
    raw = json.dumps(header).encode()
    with weights.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + start + 4 * big)
    started = time.monotonic()
    _raises_naming(weights, f"does not fit {SPEC_FILE}.*tensor '{names[0]}' has shape \\[{big}\\]", package)
    assert time.monotonic() - started < 5


def test_spec_nested_deeper_than_the_parser_goes(package: Path) -> None:
    spec = package / SPEC_FILE
    spec.write_text("[" * 200_000 + "]" * 200_000)
    _raises_naming(spec, "not valid JSON", package)


def test_huge_spec_file(package: Path) -> None:
    spec = package / SPEC_FILE
    _edit_spec(package, lambda s: s["metadata"].update(padding="x" * MAX_SPEC_BYTES))
    _raises_naming(spec, "too large", package)


# ----------------------------------------------------------------------------- edited generator.json
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: [s], "expected a JSON object, got list"),
        (lambda s: s.update(latent_dim="abc"), "latent_dim='abc': Input should be a valid integer"),
        (lambda s: s.update(latent_dim=True), "latent_dim=True"),
        (lambda s: s.update(num_classes=-1), "num_classes=-1"),
        (lambda s: s.update(image_shape=[1, 16]), "image_shape"),
        (lambda s: s.update(kwargs=[1, 2]), "kwargs"),
        (lambda s: s["kwargs"].update(width={"nested": 1}), "kwargs.width"),
        (lambda s: s.__delitem__("arch"), "arch: Field required"),
        (lambda s: s.update(format="ganops-generator/99"), "unknown format 'ganops-generator/99'"),
        (lambda s: s.update(arch="stylegan9"), "unknown architecture 'stylegan9'"),
        (lambda s: s["kwargs"].update(depth=3), "unexpected keyword argument 'depth'"),
        (lambda s: (s["kwargs"].update(resolution=20), s.update(image_shape=[1, 20, 20]))[0],
         "cannot build arch 'dcgan'.*DCGAN cannot make 20px"),
        (lambda s: s["kwargs"].update(width=-4), "cannot build arch 'dcgan'"),
        (lambda s: s.update(latent_dim=16), "kwargs.latent_dim=8 disagrees with latent_dim=16"),
    ],
    ids=["a-list", "latent-dim-string", "latent-dim-bool", "negative-classes", "short-shape", "kwargs-list",
         "kwargs-nested", "no-arch", "unknown-format", "unknown-arch", "unknown-kwarg", "bad-resolution",
         "negative-width", "disagreeing-fields"],
)
def test_edited_spec(package: Path, edit: Callable[[dict], object], match: str) -> None:
    _edit_spec(package, edit)
    _raises_naming(package / SPEC_FILE, match, package)


def test_kwargs_that_no_longer_match_the_weights(package: Path) -> None:
    _edit_spec(package, lambda s: s["kwargs"].update(width=16))
    _raises_naming(package / WEIGHTS_FILE, f"does not fit {SPEC_FILE}.*has shape .* the network needs", package)


def test_kwargs_asking_for_a_giant_network_fail_before_allocating(package: Path) -> None:
    _edit_spec(package, lambda s: s["kwargs"].update(width=1_000_000))
    started = time.monotonic()
    _raises_naming(package / SPEC_FILE, "parameters, more than", package)
    assert time.monotonic() - started < 5  # built on the meta device: no 10**13 floats were allocated


def test_arch_naming_an_import_path_is_never_imported(package: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    plant = tmp_path / "planted"
    plant.mkdir()
    (plant / "ganops_planted_arch.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\nclass Generator: pass\n"
    )
    monkeypatch.syspath_prepend(str(plant))
    for arch in ("ganops_planted_arch", "ganops_planted_arch.Generator", "ganops_planted_arch:Generator"):
        _edit_spec(package, lambda s, a=arch: s.update(arch=a))
        _raises_naming(package / SPEC_FILE, "unknown architecture", package)
    assert not marker.exists() and "ganops_planted_arch" not in sys.modules


# ----------------------------------------------------------------------------- files that are not files
def test_weights_symlinked_to_a_regular_file_are_followed(package: Path, tmp_path: Path) -> None:
    """DVC's symlink cache type makes package files links into .dvc/cache: those must keep working."""
    cache = tmp_path / "cache" / "weights"
    cache.parent.mkdir()
    shutil.move(package / WEIGHTS_FILE, cache)
    (package / WEIGHTS_FILE).symlink_to(cache)
    generator = load_generator(package)
    weights = load_file(cache)
    assert all(torch.equal(generator.state_dict()[k], weights[k]) for k in weights)


@pytest.mark.parametrize("target", ["/dev/zero", "loop", "dangling", "directory"])
def test_weights_symlinked_to_a_non_file(package: Path, tmp_path: Path, target: str) -> None:
    weights = package / WEIGHTS_FILE
    weights.unlink()
    if target == "loop":
        weights.symlink_to(weights)
    elif target == "dangling":
        weights.symlink_to(tmp_path / "nowhere")
    elif target == "directory":
        weights.symlink_to(tmp_path)
    else:
        weights.symlink_to(target)
    _raises_naming(weights, "not a regular file|dangling or looping symlink", package)


def test_spec_that_is_a_fifo_does_not_hang(package: Path) -> None:
    spec = package / SPEC_FILE
    spec.unlink()
    os.mkfifo(spec)
    _raises_naming(spec, "not a regular file", package)


def test_package_path_that_is_a_file(package: Path) -> None:
    _raises_naming(package / WEIGHTS_FILE, "is a file, not a generator package", package / WEIGHTS_FILE)


def test_package_search_is_bounded(package: Path, tmp_path: Path) -> None:
    """A package nested as MLflow nests it is found; one buried deeper than that is not searched for."""
    root = tmp_path / "model"
    shutil.copytree(package, root / "artifacts" / "generator")
    assert load_generator(root).spec["arch"] == "dcgan"
    deep = tmp_path / "deep"
    shutil.copytree(package, deep / "a" / "b" / "c" / "d" / "generator")
    with pytest.raises(UserError, match="no generator package"):
        load_generator(deep)


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "tpu", "cuda:x"])
def test_absent_or_unknown_device(package: Path, device: str) -> None:
    if (device == "cuda" and torch.cuda.is_available()) or (device == "cuda:7" and torch.cuda.device_count() > 7):
        pytest.skip("this machine has that CUDA device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(UserError, match=f"device='{device}'.*available here: cpu"):
        load_generator(package, device=device)


def test_auto_device(package: Path) -> None:
    generator = load_generator(package, device="auto")
    assert next(generator.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- sampling
def test_sample_images_refuses_values_it_would_otherwise_truncate(generator_package: Path) -> None:
    generator = load_generator(generator_package)
    for kwargs, match in [
        ({"n": 2, "labels": [1.5, 2]}, "label 1.5: expected integer class ids"),
        ({"n": 2, "labels": torch.tensor([0.0, 1.0])}, "dtype torch.float32"),
        ({"n": 2, "labels": [True, 1]}, "label True"),
        ({"n": 1.5}, "n=1.5"),
        ({"n": 2, "seed": 2**64}, "seed=18446744073709551616"),
        ({"n": 2, "seed": -1}, "seed=-1"),
    ]:
        with pytest.raises(UserError, match=match):
            sample_images(generator, **kwargs)


def test_unconditional_generator_refuses_labels(tmp_path: Path) -> None:
    from gan_core.models import build_generator
    from gan_core.packaging.generator import save_generator

    kwargs = {"latent_dim": 4, "channels": 1, "resolution": 8, "width": 4, "num_classes": 0}
    spec = {"arch": "mlp", "kwargs": kwargs, "latent_dim": 4, "image_shape": [1, 8, 8], "num_classes": 0}
    generator = load_generator(save_generator(build_generator("mlp", **kwargs), spec, tmp_path / "mlp"))
    assert sample_images(generator, 3).shape == (3, 1, 8, 8)
    with pytest.raises(UserError, match="unconditional"):
        sample_images(generator, 2, labels=[0, 1])


# ----------------------------------------------------------------------------- ganops generate
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 10**9}, rf"-n 1000000000: expected a number of images in \[1, {MAX_IMAGES}\]"),
        ({"n": 0}, "-n 0"),
        ({"n": 2.5}, "-n 2.5"),
        ({"n": 2, "seed": 2**63}, "--seed 9223372036854775808"),
        ({"n": 2, "seed": -5}, "--seed -5"),
        ({"n": 2, "labels": [1]}, "got 1 class ids for -n 2"),
        ({"n": 2, "labels": [1, -1]}, r"--labels \[1, -1\]"),
    ],
    ids=["a-billion", "zero", "fraction", "seed-above-int64", "negative-seed", "label-count", "negative-label"],
)
def test_generate_checks_the_request_before_loading(tmp_path: Path, kwargs: dict, match: str) -> None:
    # The source does not exist: a request error that comes first proves nothing was loaded before the check.
    with pytest.raises(UserError, match=match):
        generate_grid(tmp_path / "no-such-package", out=tmp_path / "g.png", **kwargs)


def test_generate_out_checks_come_before_loading(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-package"
    (tmp_path / "grids.png").mkdir()
    (tmp_path / "blocker").write_text("a file")
    for out, match in [
        (tmp_path, "is a directory; name a .png file"),
        (tmp_path / "grids.png", "is a directory"),
        (tmp_path / "blocker" / "sub" / "g.png", "is a file, not a directory"),
        (tmp_path / "g.jpg", "expected a .png path"),
    ]:
        with pytest.raises(UserError, match=match) as info:
            generate_grid(missing, n=4, out=out)
        assert "no-such-package" not in str(info.value)
    with pytest.raises(UserError, match="--device='tpu'"):
        generate_grid(missing, n=4, out=tmp_path / "g.png", device="tpu")


def test_generate_label_out_of_range_names_the_classes(package: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"labels must lie in \[0, 9\]"):
        generate_grid(package, n=2, out=tmp_path / "g.png", labels=[0, 10], device="cpu")


def test_generate_without_disk_space_writes_nothing(package: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANOPS_MIN_FREE_BYTES", str(2**62))
    out = tmp_path / "new" / "g.png"
    with pytest.raises(UserError, match="not enough disk space for the image grid"):
        generate_grid(package, n=4, out=out, device="cpu")
    assert not (tmp_path / "new").exists()


def test_generate_failure_creates_no_directories(package: Path, tmp_path: Path) -> None:
    (package / WEIGHTS_FILE).write_bytes(b"not safetensors")
    out = tmp_path / "a" / "b" / "g.png"
    with pytest.raises(UserError, match="unreadable safetensors"):
        generate_grid(package, n=4, out=out, device="cpu")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("damage", ["truncated-weights", "cut-short-spec", "mismatched-kwargs", "missing-weights"])
def test_ganops_generate_reports_a_damaged_package_in_one_line(
    package: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import app
    from gan_core.cli import run_app

    weights, spec = package / WEIGHTS_FILE, package / SPEC_FILE
    if damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "cut-short-spec":
        spec.write_bytes(spec.read_bytes()[:-30])
    elif damage == "mismatched-kwargs":
        _edit_spec(package, lambda s: s["kwargs"].update(width=4))
    else:
        weights.unlink()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "grid.png"
    code = run_app(app, ["generate", "--model", str(package), "-n", "4", "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert str(package) in lines[0] and "Traceback" not in captured.out + captured.err
    assert not out.exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    ("argv", "must_name"),
    [
        (["-n", "1000000000"], "-n 1000000000"),
        (["--seed", str(2**64)], f"--seed {2**64}"),
        (["--seed", "-1"], "--seed -1"),
        (["--labels", "0,1"], "got 2 class ids for -n 4"),
        (["--labels", "0,1,2,10"], "labels must lie in [0, 9]"),
        (["--out", "."], "is a directory"),
        (["--device", "tpu"], "--device='tpu'"),
    ],
    ids=["a-billion-images", "seed-above-int64", "negative-seed", "label-count", "label-range", "out-a-directory",
         "unknown-device"],
)
def test_ganops_generate_refuses_absurd_requests_in_one_line(
    generator_package: Path, tmp_path: Path, argv: list[str], must_name: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.cli import app
    from gan_core.cli import run_app

    monkeypatch.chdir(tmp_path)
    base = ["generate", "--model", str(generator_package), "-n", "4", "--out", "grid.png", "--device", "cpu"]
    code = run_app(app, [*base, *argv])  # a repeated option: the last one wins
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert must_name in lines[0] and "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []
