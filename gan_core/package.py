"""The generator package: `weights.safetensors` + `generator.json`. Loading never unpickles.

    G = load_generator("outputs/train/generator")              # a package directory
    G = load_generator("models:/ganops-generator@champion")     # a registered MLflow model
    images = sample_images(G, 64, seed=0)                       # uint8 (64, C, H, W)

generator.json holds what is needed to rebuild the network and read its output:
    {"format": "ganops-generator/1", "arch": "dcgan", "kwargs": {...}, "latent_dim": 64,
     "image_shape": [1, 32, 32], "num_classes": 10, "class_names": [...],
     "normalization": "tanh", "metadata": {...}}
Every generator module takes `(z, labels=None)` with z of shape (B, latent_dim) and returns
images in [-1, 1] of shape (B, C, H, W), and exposes `latent_dim` and `num_classes` (0 = unconditional).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gan_core.atomic import atomic_dir, write_json
from gan_core.errors import UserError

FORMAT = "ganops-generator/1"
WEIGHTS_FILE = "weights.safetensors"
SPEC_FILE = "generator.json"


def save_generator(generator: nn.Module, spec: dict[str, Any], out_dir: str | Path) -> Path:
    """Write the package atomically: build it in a temp dir beside `out_dir`, then rename over it.

    `spec` must hold arch, kwargs, latent_dim, image_shape, num_classes; format is added here.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    missing = {"arch", "kwargs", "latent_dim", "image_shape", "num_classes"} - spec.keys()
    if missing:
        raise ValueError(f"generator spec lacks {sorted(missing)}")
    full = {"format": FORMAT, "normalization": "tanh", "class_names": None, "metadata": {}, **spec}
    # Some compiled / DDP-wrapped modules prefix keys; the package stores the plain module's names.
    module = getattr(generator, "_orig_mod", generator)
    module = getattr(module, "module", module)
    state = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_dir(out) as tmp:
        save_file(state, tmp / WEIGHTS_FILE)
        write_json(tmp / SPEC_FILE, full)
    return out


def read_spec(package_dir: str | Path) -> dict[str, Any]:
    path = Path(package_dir) / SPEC_FILE
    if not path.is_file():
        raise UserError(
            f"{package_dir}: not a generator package (no {SPEC_FILE}); "
            "expected a directory written by `python -m gan_core train`"
        )
    spec = json.loads(path.read_text())
    if spec.get("format") != FORMAT:
        raise UserError(f"{path}: unknown format {spec.get('format')!r}; expected {FORMAT!r}")
    return spec


def find_package(root: str | Path) -> Path:
    """The package directory at or below `root` (MLflow artifact downloads nest it)."""
    root = Path(root)
    if (root / SPEC_FILE).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(SPEC_FILE))
    if not found:
        raise UserError(f"{root}: no generator package ({SPEC_FILE}) found inside")
    return found[0]


def load_generator(source: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A ready (eval-mode) generator from a package directory or an MLflow model URI (`models:/...`, `runs:/...`)."""
    from gan_core.models import build_generator

    src = str(source)
    if src.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        import mlflow

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=src)
        except Exception as e:  # MLflow raises several types for a missing name/alias/version
            reason = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            raise UserError(f"cannot fetch {src!r} from MLflow ({reason})") from None
        package_dir = find_package(local)
    else:
        package_dir = Path(src)
        if not package_dir.exists():
            raise UserError(f"generator {src!r} does not exist; expected a package directory or models:/<name>@<alias>")
        package_dir = find_package(package_dir)
    spec = read_spec(package_dir)
    generator = build_generator(spec["arch"], **spec["kwargs"])
    generator.load_state_dict(load_file(package_dir / WEIGHTS_FILE))
    generator.spec = spec  # type: ignore[attr-defined]  # image shape, class names, lineage travel with the module
    return generator.to(device).eval()


@torch.no_grad()
def sample_images(
    generator: nn.Module,
    n: int,
    seed: int = 0,
    labels: torch.Tensor | list[int] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """n images as uint8 (n, C, H, W) on the CPU; the same seed gives the same images on the same device.

    Conditional generators get `labels` (length n) or, when None, classes cycled 0, 1, 2, ...
    """
    device = next(generator.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    num_classes = int(getattr(generator, "num_classes", 0))
    if num_classes and labels is None:
        labels = torch.arange(n) % num_classes
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (n,):
            raise UserError(f"got {labels.shape[0]} labels for {n} samples; pass one label per sample")
        if num_classes and (labels.min() < 0 or labels.max() >= num_classes):
            raise UserError(f"labels must lie in [0, {num_classes - 1}], got {labels.tolist()[:8]}")
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        # Noise is drawn on the CPU so a seed means the same images on every device.
        z = torch.randn(b, generator.latent_dim, generator=gen).to(device)
        y = labels[start : start + b].to(device) if labels is not None and num_classes else None
        x = generator(z, y) if y is not None else generator(z)
        out.append(to_uint8(x.float()).cpu())
    return torch.cat(out)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → uint8 [0, 255], the form torch-fidelity and image files take."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
