"""The generator package: `weights.safetensors` + `generator.json`. Loading never unpickles.

    G = load_generator("outputs/train/generator")              # a package directory
    G = load_generator("models:/ganops-generator@champion")     # a registered MLflow model
    images = sample_images(G, 64, seed=0)                       # uint8 (64, C, H, W)
    images = sample_images(G, 64, seed=0, truncation_psi=0.7)   # style-based generators: the truncation trick

generator.json holds what is needed to rebuild the network and read its output:
    {"format": "ganops-generator/1", "arch": "dcgan", "kwargs": {...}, "latent_dim": 64,
     "image_shape": [1, 32, 32], "num_classes": 10, "class_names": [...],
     "normalization": "tanh", "metadata": {...}}
Every generator module takes `(z, labels=None)` with z of shape (B, latent_dim) and returns
images in [-1, 1] of shape (B, C, H, W), and exposes `latent_dim` and `num_classes` (0 = unconditional).
Style-based generators (stylegan2) also take `truncation_psi` and say so with `supports_truncation = True`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gan_core.atomic import atomic_dir, write_json
from gan_core.config.catalogue import GENERATION, TASKS
from gan_core.errors import UserError, first_line

FORMAT = "ganops-generator/1"
WEIGHTS_FILE = "weights.safetensors"
SPEC_FILE = TASKS[GENERATION].spec_file  # generator.json
PACKAGE_FILES = {kind.package: kind.spec_file for kind in TASKS.values()}
"""The spec file that makes a directory a package of each kind (one kind per task kind: generator, translator)."""
COMMANDS = {kind.package: kind.command for kind in TASKS.values()}
"""The `ganops` command that uses each kind of package (generate, translate)."""
MAX_SPEC_BYTES = 1 << 20
"""generator.json is a few KB (class names for thousands of classes still fit); a larger one is not ours."""
MAX_PARAMETERS = 1 << 30
"""Most generator parameters a package may declare (4 GiB of float32): kwargs edited to `width: 10**6` must
fail with a message, not by exhausting memory while the network is built."""
MAX_SEED = 2**63 - 1
GRID_SAMPLES = 64
"""Images in a generator's sample grid (8×8): training's grids of its fixed latents, evaluation's samples.png."""
"""Noise seeds are non-negative int64 values (what JSON clients, pandas and MLflow carry without loss)."""
MAX_HEADER_BYTES = 100 << 20
"""safetensors' own limit on the JSON header of a weights file."""
SEARCH_DEPTH = 3
"""How deep below a given directory find_package looks: an MLflow model nests the package at
artifacts/generator/; `--model /` must not walk the whole filesystem."""
REDO = "re-export it (python -m gan_core train, or download the model version again)"


class _Spec(BaseModel):
    """generator.json's structure. Strict: `"latent_dim": "64"` or `true` is a damaged file, not a 64."""

    model_config = ConfigDict(strict=True, extra="allow")

    format: Literal["ganops-generator/1"]
    arch: StrictStr
    kwargs: dict[str, StrictInt | StrictFloat | StrictBool | StrictStr | None]
    latent_dim: int = Field(ge=1)
    image_shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=3, max_length=3)]
    num_classes: int = Field(ge=0)
    class_names: list[StrictStr] | None = None
    normalization: Literal["tanh"] = "tanh"
    metadata: dict[str, Any] = {}


def save_generator(generator: nn.Module, spec: dict[str, Any], out_dir: str | Path) -> Path:
    """Write the package atomically: build it in a temp dir beside `out_dir`, then rename over it.

    `spec` must hold arch, kwargs, latent_dim, image_shape, num_classes; format is added here.
    """
    out = Path(out_dir)
    missing = {"arch", "kwargs", "latent_dim", "image_shape", "num_classes"} - spec.keys()
    if missing:
        raise ValueError(f"generator spec lacks {sorted(missing)}")
    full = {"format": FORMAT, "normalization": "tanh", "class_names": None, "metadata": {}, **spec}
    return write_package(generator, SPEC_FILE, full, out)


def write_package(network: nn.Module, spec_file: str, spec: dict[str, Any], out: Path) -> Path:
    """`network`'s weights (float32 safetensors) and `spec` as `spec_file`, built in a temp dir beside `out` and
    renamed over it. The generator and translator packages are both written here."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Some compiled / DDP-wrapped modules prefix keys; the package stores the plain module's names.
    module = getattr(network, "_orig_mod", network)
    module = getattr(module, "module", module)
    state = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_dir(out) as tmp:
        save_file(state, tmp / WEIGHTS_FILE)
        write_json(tmp / spec_file, spec)
    return out


def read_spec(package_dir: str | Path) -> dict[str, Any]:
    """generator.json, checked: JSON object, known format, field types, and kwargs that agree with the fields."""
    path = Path(package_dir) / SPEC_FILE
    if not path.exists() and not path.is_symlink():
        raise UserError(
            f"{package_dir}: not a generator package (no {SPEC_FILE}); "
            "expected a directory written by `python -m gan_core train`"
        )
    raw, spec = read_checked_spec(path, FORMAT, _Spec)
    _check_agreement(path, spec)
    return raw


def read_checked_spec(path: Path, fmt: str, schema: type[BaseModel]) -> tuple[dict[str, Any], Any]:
    """A package's spec file as (the JSON object, validated by `schema`): a regular file of at most MAX_SPEC_BYTES,
    a JSON object of format `fmt`. Anything else is a UserError naming the file (and the field)."""
    _check_regular_file(path)
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes, too large for a {path.name} (at most "
                        f"{MAX_SPEC_BYTES}); the package is damaged: {REDO}")
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError; nesting deeper than Python's stack
        raise UserError(f"{path}: not valid JSON ({first_line(e)}); the file is cut short or damaged: {REDO}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(raw).__name__}; the package is damaged: {REDO}")
    if raw.get("format") != fmt:
        raise UserError(f"{path}: unknown format {raw.get('format')!r}; expected {fmt!r}")
    try:
        return raw, schema.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        got = f"={err['input']!r}" if err["type"] != "missing" else ""
        raise UserError(f"{path}: {where}{got}: {err['msg']}; the package is damaged or was edited: {REDO}") from None


def _check_agreement(path: Path, spec: _Spec) -> None:
    """The arguments the network is built from must say what the rest of the file says."""
    declared = {"latent_dim": spec.latent_dim, "num_classes": spec.num_classes,
                "channels": spec.image_shape[0], "resolution": spec.image_shape[1]}
    for key, value in declared.items():
        if key in spec.kwargs and spec.kwargs[key] != value:
            field = {"channels": "image_shape[0]", "resolution": "image_shape[1]"}.get(key, key)
            raise UserError(f"{path}: kwargs.{key}={spec.kwargs[key]!r} disagrees with {field}={value!r}; "
                            f"the file was edited: restore it or {REDO}")


def find_package(root: str | Path, kind: str = "generator") -> Path:
    """The package directory at or below `root` (MLflow artifact downloads nest it, at most SEARCH_DEPTH deep).
    `kind` is generator or translator; finding the other kind says which loader to use."""
    root = Path(root)
    if root.is_file():
        raise UserError(f"{root}: is a file, not a {kind} package; pass the directory that holds "
                        f"{PACKAGE_FILES[kind]}")
    for depth in range(SEARCH_DEPTH + 1):
        for found_kind, name in PACKAGE_FILES.items():
            if depth == 0:  # the spec itself may be damaged (a dangling link): its loader says so
                hits = [root] if (root / name).exists() or (root / name).is_symlink() else []
            else:
                hits = sorted(p.parent for p in root.glob("/".join(["*"] * depth + [name])))
            if hits and found_kind == kind:
                return hits[0]
            if hits:
                raise UserError(f"{hits[0]}: holds a {found_kind} package, not a {kind}; load it with "
                                f"gan_core.load_{found_kind}(...) or `ganops {COMMANDS[found_kind]}`")
    raise UserError(f"{root}: no {kind} package ({PACKAGE_FILES[kind]}) found inside")


def local_package(source: str | Path, kind: str = "generator") -> Path:
    """The package directory for a package path or an MLflow model URI (`models:/...`, `runs:/...`), downloaded."""
    src = str(source)
    if src.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        import mlflow

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=src)
        except Exception as e:  # MLflow raises several types for a missing name/alias/version
            reason = f"{type(e).__name__}: {first_line(e)}"
            raise UserError(f"cannot fetch {src!r} from MLflow ({reason})") from None
        return find_package(local, kind)
    if not Path(src).exists():
        raise UserError(f"{kind} {src!r} does not exist; expected a package directory or models:/<name>@<alias>")
    return find_package(src, kind)


def load_generator(source: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A ready (eval-mode) generator from a package directory or an MLflow model URI (`models:/...`, `runs:/...`).

    `device`: cpu | cuda | cuda:N | mps | auto (CUDA > MPS > CPU). A damaged package (cut-short or edited files,
    weights that do not fit generator.json, NaN weights) is a UserError naming the file.
    """
    from gan_core.device import pick_device
    from gan_core.models import build_generator

    target = pick_device(str(device), key="device")
    package_dir = local_package(source)
    spec = read_spec(package_dir)
    generator = build_checked(package_dir, SPEC_FILE, spec["arch"], spec["kwargs"], build_generator)
    generator.spec = spec  # type: ignore[attr-defined]  # image shape, class names, lineage travel with the module
    return generator.to(target).eval()


def build_checked(package_dir: Path, spec_file: str, arch: str, kwargs: dict[str, Any],
                  build: Callable[..., nn.Module]) -> nn.Module:
    """The network `build(arch, **kwargs)` with the weights file's tensors, each step checked against the other.

    The network is first built on the meta device (no memory): its parameter count and tensor shapes are compared
    with the weights file's header before anything is allocated or read."""
    spec_path, weights_path = package_dir / spec_file, package_dir / WEIGHTS_FILE
    try:
        with torch.device("meta"):
            skeleton = build(arch, **kwargs)
    except (UserError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{spec_path}: cannot build arch {arch!r} from kwargs {kwargs} ({first_line(e)}); "
                        f"the file was edited or comes from another ganops version: {REDO}") from None
    count = sum(p.numel() for p in skeleton.parameters())
    if count > MAX_PARAMETERS:
        raise UserError(f"{spec_path}: kwargs {kwargs} make a network of {count:,} parameters, more than "
                        f"{MAX_PARAMETERS:,}; the file was edited: {REDO}")
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    mismatch = _header_mismatch(weights_path, expected)
    if mismatch:
        raise UserError(f"{weights_path}: does not fit {spec_file} ({mismatch}); the two files come from different "
                        f"packages or {spec_file} was edited: {REDO}")
    state = _read_weights(weights_path)
    bad = next((name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:
        raise UserError(f"{weights_path}: tensor {bad!r} holds NaN or infinite values; the training diverged or "
                        "the file is damaged: use another model version or retrain")
    network = build(arch, **kwargs)
    network.load_state_dict(state)
    return network


def _check_regular_file(path: Path) -> None:
    """A package file must be a regular file: a symlink to one is followed (DVC's symlink cache makes them), but
    not to a device, a FIFO (reading it would hang) or a directory, nor a dangling or looping link."""
    if not path.is_file():
        kind = "a dangling or looping symlink" if path.is_symlink() and not path.exists() else "not a regular file"
        raise UserError(f"{path}: {kind}; the package is damaged: {REDO}")


def _header_mismatch(weights_path: Path, expected: dict[str, tuple[int, ...]]) -> str:
    """'' when the weights file's header lists exactly the expected tensor names and shapes, else the first
    difference. Only the header is read (safetensors' own open maps the whole file, which a header claiming
    40 GB makes fail or cost); the file must also be exactly as long as the header says."""
    if not weights_path.exists() and not weights_path.is_symlink():
        raise UserError(f"{weights_path}: missing; the package is incomplete: {REDO}")
    _check_regular_file(weights_path)
    try:
        found = _read_header(weights_path)
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
        raise UserError(f"{weights_path}: unreadable safetensors file ({first_line(e) or type(e).__name__}); "
                        f"the file is cut short or damaged: {REDO}") from None
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing:
        return f"tensor {missing[0]!r} missing" + (f", {len(missing) - 1} more" if len(missing) > 1 else "")
    if unexpected:
        return f"unexpected tensor {unexpected[0]!r}"
    wrong = next((name for name in sorted(expected) if expected[name] != found[name]), None)
    if wrong is not None:
        return f"tensor {wrong!r} has shape {list(found[wrong])}, the network needs {list(expected[wrong])}"
    return ""


def _read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from a safetensors header (u64 little-endian length, then JSON); ValueError when the
    header is malformed or the file is not exactly as long as header + the data it declares."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{len(head)} bytes, shorter than a header")
        length = int.from_bytes(head, "little")
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"header of {length} bytes declared, more than {MAX_HEADER_BYTES}")
        raw = f.read(length)
    if len(raw) < length:
        raise ValueError("header cut short")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    shapes, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape, (begin, stop) = entry["shape"], entry["data_offsets"]
        if not all(isinstance(x, int) and x >= 0 for x in [*shape, begin, stop]) or stop < begin:
            raise ValueError(f"malformed entry for tensor {name!r}")
        shapes[name], end = tuple(shape), max(end, stop)
    size = path.stat().st_size
    if size != 8 + length + end:
        raise ValueError(f"the header declares {8 + length + end} bytes, the file holds {size}")
    return shapes


def _read_weights(weights_path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(weights_path)
    except (SafetensorError, OSError) as e:  # the file changed since its header was read
        raise UserError(f"{weights_path}: unreadable safetensors file ({first_line(e)}): {REDO}") from None


def as_int(value: Any) -> int | None:
    """`value` as an int when it is an integer: Python and NumPy ints, and whole floats up to 2**53 (pandas carries
    an integer column with a gap as floats); None for anything else (bool, str, 1.5, NaN, lists)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return int(value) if abs(value) <= 2**53 else None
    return None


@torch.no_grad()
def sample_images(
    generator: nn.Module,
    n: int,
    seed: int = 0,
    labels: torch.Tensor | Sequence[int] | None = None,
    batch_size: int = 256,
    truncation_psi: float = 1.0,
) -> torch.Tensor:
    """n images as uint8 (n, C, H, W) on the CPU; the same seed gives the same images on the same device.

    Conditional generators get `labels` (length n) or, when None, classes cycled 0, 1, 2, ...
    Unconditional ones take no labels. `seed` is an integer in [0, MAX_SEED]. `truncation_psi` in [0, 1] trades
    variety for typicality on style-based generators (1 = off; 0 = every z gives the average image).
    """
    psi = check_truncation(generator, truncation_psi)
    n_int, seed_int = as_int(n), as_int(seed)
    if n_int is None or n_int < 1:
        raise UserError(f"n={n!r}: expected a number of images >= 1")
    if seed_int is None or not 0 <= seed_int <= MAX_SEED:
        raise UserError(f"seed={seed!r}: expected an integer in [0, 2**63 - 1]")
    n, seed = n_int, seed_int
    device = next(generator.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    num_classes = int(getattr(generator, "num_classes", 0))
    if num_classes and labels is None:
        labels = torch.arange(n) % num_classes
    if labels is not None:
        if not num_classes:
            raise UserError("labels were given, but this generator is unconditional (num_classes=0); omit them")
        labels = _label_tensor(labels)
        if labels.shape != (n,):
            raise UserError(f"got {labels.numel()} labels for {n} samples; pass one label per sample")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise UserError(f"labels must lie in [0, {num_classes - 1}], got {labels.tolist()[:8]}")
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        # Noise is drawn on the CPU so a seed means the same images on every device.
        z = torch.randn(b, generator.latent_dim, generator=gen).to(device)
        y = labels[start : start + b].to(device) if labels is not None else None
        x = generator(z, y, truncation_psi=psi) if psi != 1.0 else generator(z, y) if y is not None else generator(z)
        out.append(to_uint8(x.float()).cpu())
    return torch.cat(out)


def truncation_value(truncation_psi: object) -> float:
    """truncation_psi as a float in [0, 1] (1 = no truncation), else a UserError naming it."""
    psi = truncation_psi if isinstance(truncation_psi, int | float) and not isinstance(truncation_psi, bool) else None
    if psi is None or not 0.0 <= float(psi) <= 1.0:
        raise UserError(f"truncation_psi={truncation_psi!r}: expected a number in [0, 1] (1 = no truncation)")
    return float(psi)


def check_truncation(generator: nn.Module, truncation_psi: object) -> float:
    """truncation_value, and anything but 1 needs a generator that supports it."""
    psi = truncation_value(truncation_psi)
    if psi != 1.0 and not getattr(generator, "supports_truncation", False):
        raise UserError(f"truncation_psi={psi}: this generator ({type(generator).__module__.rsplit('.', 1)[-1]}) "
                        "has no w space to truncate; only style-based generators (stylegan2) take it")
    return float(psi)


def _label_tensor(labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Class ids as int64 (n,): 1.5 or True is refused rather than truncated to a class."""
    if isinstance(labels, torch.Tensor):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise UserError(f"labels of dtype {labels.dtype}: expected integer class ids")
        return labels.long().flatten() if labels.dim() == 0 else labels.long()
    ids = [as_int(x) for x in labels]
    if None in ids:
        bad = labels[ids.index(None)]
        raise UserError(f"label {bad!r}: expected integer class ids")
    return torch.tensor(ids, dtype=torch.long)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → uint8 [0, 255], the form torch-fidelity and image files take."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
