"""A network evaluation trains for itself (the lenet domain classifier, the simclr domain encoder) as a model
directory: weights.safetensors + a JSON spec ({"format", "kwargs", "training_key", ...}), written whole or not at all,
loaded without unpickling anything, and reused only when whole and trained the same way.

    CLASSIFIER = NetworkFiles("classifier", "classifier.json", "ganops-classifier/1", LeNet)
    CLASSIFIER.save(net, spec, out)        # the directory swapped in whole
    net = CLASSIFIER.load(out)             # eval mode, net.info = the spec; a damaged file is a UserError naming it
    spec = CLASSIFIER.reusable_spec(out, key, stacklevel=3)   # None (and a warning when damaged): train again

Each owner (gan_core.packaging.classifier, gan_core.evaluation.encoder) keeps its own training, identity and checks.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gan_core.atomic import atomic_dir, write_json
from gan_core.errors import UserError

WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class NetworkFiles:
    name: str
    """The network's step and command (`python -m gan_core <name>`), as messages name it: classifier, encoder."""
    spec_file: str
    format: str
    build: Callable[..., nn.Module]
    """The network from the spec's kwargs."""
    finite: bool = False
    """Refuse weights holding NaN or infinite values when loading."""

    def save(self, net: nn.Module, spec: dict[str, Any], out: Path) -> None:
        """Build the model directory beside `out`, then swap it in (never half-written)."""
        with atomic_dir(out) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp / WEIGHTS_FILE)
            write_json(tmp / self.spec_file, spec)

    def read_spec(self, path: Path) -> dict[str, Any] | None:
        """The spec in `path`, or None when there is none; UserError when it is damaged or of another format."""
        file = path / self.spec_file
        if not file.is_file():
            return None
        redo = f"delete {path} and retrain the {self.name} (`python -m gan_core {self.name}`)"
        try:
            spec = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{file}: not readable JSON ({why(e)}); {redo}") from None
        if not isinstance(spec, dict):
            raise UserError(f"{file}: a JSON {type(spec).__name__}, not the object train_{self.name} writes; {redo}")
        if spec.get("format") != self.format:
            raise UserError(f"{file}: unknown format {spec.get('format')!r}; expected {self.format!r}")
        return spec

    def load(self, path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
        """The eval-mode network of the model directory `path`; `.info` holds the spec. A missing or damaged file
        is a UserError naming it."""
        path = Path(path)
        spec = self.read_spec(path)
        if spec is None:
            raise UserError(f"no domain {self.name} at {str(path)!r} (no {self.spec_file}); run "
                            f"`python -m gan_core {self.name}` first")
        weights = path / WEIGHTS_FILE
        redo = f"delete {path} and run `python -m gan_core {self.name}` to retrain it"
        try:
            net = self.build(**spec["kwargs"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{path / self.spec_file}: bad {self.name} kwargs ({type(e).__name__}: {why(e)}); "
                            f"{redo}") from None
        try:
            state = load_file(weights)
        except FileNotFoundError:
            raise UserError(f"{weights}: missing; {redo}") from None
        except (SafetensorError, OSError) as e:
            raise UserError(f"{weights}: not a readable safetensors file ({why(e)}); {redo}") from None
        try:
            net.load_state_dict(state)
        except RuntimeError as e:  # missing/unexpected keys or shapes: the weights and the spec disagree
            raise UserError(f"{weights}: does not match {self.spec_file} ({why(e)}); {redo}") from None
        if self.finite and not all(bool(t.isfinite().all()) for t in state.values() if t.is_floating_point()):
            raise UserError(f"{weights}: holds NaN or infinite values; {redo}")
        net.info = spec  # type: ignore[attr-defined]
        return net.to(device).eval()

    def reusable_spec(self, out: Path, key: str, *, check: Callable[[dict[str, Any]], object] = lambda spec: None,
                      stacklevel: int = 2) -> dict[str, Any] | None:
        """The stored model's spec when it was trained with `key`, loads whole and passes `check` (which raises
        KeyError/TypeError/ValueError for a spec missing what its owner records); else None (train again).

        The stored model is a cache of a deterministic training: a damaged one is rebuilt, not reported.
        `stacklevel`: as warnings.warn takes it, counted from the caller of this method."""
        try:
            spec = self.read_spec(out)
            if spec is None or spec.get("training_key") != key:
                return None
            self.load(out)  # a few hundred kB: proves the weights are whole and fit the spec
            check(spec)
            return spec
        except (UserError, KeyError, TypeError, ValueError) as e:
            warnings.warn(f"retraining the domain {self.name}: the stored one is damaged ({e})",
                          stacklevel=stacklevel + 1)
            return None


def why(e: BaseException, limit: int = 200) -> str:
    """A library's message on one line (torch's state-dict errors put the useful part on their second line)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
