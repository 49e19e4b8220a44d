"""Training checkpoints: one self-describing file, `{out_dir}/checkpoints/last.pt`, with a small JSON beside it.

    save_checkpoint(path, state)          # atomic: temp file + os.replace
    state = load_checkpoint(path)         # torch.load(weights_only=True): tensors, dicts, lists, numbers, strings

The state holds G, D, the EMA generator, both optimizers, the step, RNG states (torch CPU and CUDA, NumPy,
Python), the config, the data version and the code hash. No grad scaler (bf16 autocast needs none) and no sampler
position: gan_core.training.batching derives every batch from (seed, step), so the step is the position.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from gan_core.atomic import atomic_file
from gan_core.errors import UserError

FORMAT = "ganops-checkpoint/1"
CHECKPOINT_FILE = "last.pt"
SUMMARY_FILE = "last.json"
RESUME_FIX = "delete it or run with --no-resume to train from scratch"

def rng_state() -> dict[str, Any]:
    """Every global RNG, as tensors and plain values so weights_only loading accepts it."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: str | Path, state: dict[str, Any], summary: dict[str, Any] | None = None) -> Path:
    """Write `state` to `path` atomically (a killed process leaves the previous checkpoint whole), then the JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))
    if summary is not None:
        text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
        _atomic_write(path.with_name(SUMMARY_FILE), lambda f: f.write(text.encode()))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects (weights_only=True) and check its structure, so a
    damaged or foreign file is one UserError naming it, not a KeyError halfway through resuming."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, not a pickle traceback
        raise UserError(
            f"{path}: unreadable checkpoint ({type(e).__name__}: cut short, damaged or not written by ganops); "
            f"{RESUME_FIX}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a ganops checkpoint (expected format {FORMAT!r}); {RESUME_FIX}")
    problem = _structure_problem(state)
    if problem:
        raise UserError(f"{path}: damaged checkpoint ({problem}); {RESUME_FIX}")
    return state


# What resuming reads, by key path: the type each value must have (tuples: any of these).
_TENSORS = "dict of tensors"
REQUIRED: dict[str, type | tuple[type, ...] | str] = {
    "step": int,
    "generator": _TENSORS,
    "discriminator": _TENSORS,
    "ema": dict,
    "ema.module": _TENSORS,
    "ema.num_updates": int,
    "g_optimizer": dict,
    "g_optimizer.state": dict,
    "g_optimizer.param_groups": list,
    "d_optimizer": dict,
    "d_optimizer.state": dict,
    "d_optimizer.param_groups": list,
    "rng": dict,
    "rng.torch": torch.Tensor,
    "rng.cuda": list,
    "rng.numpy": dict,
    "rng.numpy.kind": str,
    "rng.numpy.keys": torch.Tensor,
    "rng.numpy.pos": int,
    "rng.numpy.has_gauss": int,
    "rng.numpy.gauss": float,
    "rng.python": dict,
    "rng.python.version": int,
    "rng.python.state": list,
    "rng.python.gauss": (float, type(None)),
    "config": dict,
    "config.model": dict,
    "config.train": dict,
    "data_version": str,
}


def _structure_problem(state: dict[str, Any]) -> str:
    """'' when every REQUIRED key is there with its type, else the first problem ('rng.numpy.keys missing')."""
    for key, kind in REQUIRED.items():
        value: Any = state
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return f"{key} missing"
            value = value[part]
        if kind == _TENSORS:
            if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
                return f"{key} is not a {_TENSORS}"
        elif isinstance(value, bool) or not isinstance(value, kind):  # type: ignore[arg-type]
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            return f"{key} is a {type(value).__name__}, expected {expected}"
    if state["step"] < 0:
        return f"step={state['step']}, expected >= 0"
    return ""


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    # fsync before the rename: after a power cut, last.pt is the old checkpoint or the new one, never empty.
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
