"""The evaluation context: what a metric's value depends on besides the generator. Two values of fid_lenet are
comparable only when measured in the same context: the same real data, the same feature extractor weights (the
lenet classifier is retrained per data version, so its feature space moves with the data), the same sample count,
seed, batch size (it sets the per-chunk sampling seeds) and the settings that shape KID and class coverage.

    ctx = evaluation_context(evaluation.info)     # the one definition (also Evaluation.context)
    context_hash(ctx)                             # '1a2b3c4d5e6f7a8b': 16 hex of the canonical JSON
    context_tags(ctx)                             # eval.context, eval.context_hash, eval.data_version, ...
    recorded_context(mv.tags)                     # the context recorded on a run or model version, or None
    context_difference(old, new)                  # "num_samples: 200 → now 300"

    cache = champion_cache_path(cfg.eval.cache_dir, "ganops-generator", "3", run_id, hash_)
    read_measurement(cache, hash_)  /  write_measurement(cache, ctx, metrics, source=...)

The gate (flows.gate), the registry's re-evaluation of the champion (flows.registry), the monitor (flows.monitor)
and `ganops models` all read contexts through here. Measurements of a registered version in a context are cached as
JSON (written atomically, never unpickled) under eval.cache_dir/champions, keyed by the version, its run and the
context hash: a version's weights never change, so neither does its value in one context.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gan_core.atomic import write_json
from gan_core.config.catalogue import GENERATION
from gan_core.training.identity import first_difference

FORMAT = "ganops-eval-context/1"
CONTEXT_TAG = "eval.context"
"""Run and model version tag: the context as canonical JSON."""
CONTEXT_HASH_TAG = "eval.context_hash"
"""Run and model version tag: context_hash of it (what `ganops models` shows, shortened)."""
SHORT = 8
"""Hex digits of a context hash shown to people (reasons, tables)."""
CACHE_SUBDIR = "champions"
CACHE_FORMAT = "ganops-version-measurement/1"

# info keys (gan_core.evaluation.evaluate / .translation) that change the numbers; the rest (device, cache use,
# paths, the generator's URI) describe how the run went, not what was measured.
_SETTINGS = ("task", "data_version", "num_samples", "seed", "batch_size", "kid_subset_size", "coverage_min_share",
             "holdout_fraction")
_EXTRACTOR_KEYS = ("weights_sha256", "training_key", "kid_subset_size")


def evaluation_context(info: Mapping[str, Any]) -> dict[str, Any]:
    """The context of an evaluation, from its info (Evaluation.info / info.json): data version, task, sampling
    settings, and per extractor the digest of its weights (and the lenet classifier's training key). Pure."""
    ctx: dict[str, Any] = {"format": FORMAT, "task": info.get("task", GENERATION)}
    ctx.update({k: info[k] for k in _SETTINGS if k in info and k != "task"})
    ctx["extractors"] = {
        name: {k: entry[k] for k in _EXTRACTOR_KEYS if k in entry}
        for name, entry in sorted((info.get("extractors") or {}).items())
    }
    return ctx


def canonical_json(ctx: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces: the same context always gives the same bytes (and hash)."""
    return json.dumps(ctx, sort_keys=True, separators=(",", ":"))


def context_hash(ctx: Mapping[str, Any]) -> str:
    """sha256 (16 hex) of the context's canonical JSON."""
    return hashlib.sha256(canonical_json(ctx).encode()).hexdigest()[:16]


def short(hash_: str | None) -> str:
    """A context hash as people see it ('1a2b3c4d'), or 'unrecorded'."""
    return hash_[:SHORT] if hash_ else "unrecorded"


def context_tags(ctx: Mapping[str, Any]) -> dict[str, str]:
    """Tags for a run or model version: the context (JSON) and its hash, plus readable per-field tags."""
    tags = {CONTEXT_TAG: canonical_json(ctx), CONTEXT_HASH_TAG: context_hash(ctx)}
    for key in ("data_version", "num_samples", "seed"):
        if key in ctx:
            tags[f"eval.{key}"] = str(ctx[key])
    tags["eval.extractors"] = ", ".join(f"{name}:{e.get('weights_sha256', '?')[:12]}"
                                        for name, e in ctx.get("extractors", {}).items())
    return tags


def recorded_context(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The context recorded in `tags` (a run's or a model version's), or None when there is none (registered
    before contexts were recorded, or the tag was damaged: never guessed)."""
    raw = tags.get(CONTEXT_TAG)
    if not raw:
        return None
    try:
        ctx = json.loads(raw)
    except ValueError:
        return None
    return ctx if isinstance(ctx, dict) and ctx.get("format") == FORMAT else None


def recorded_hash(tags: Mapping[str, str]) -> str | None:
    """context_hash of the recorded context (recomputed from the JSON, so an edited hash tag cannot mislead)."""
    ctx = recorded_context(tags)
    return context_hash(ctx) if ctx is not None else None


def context_difference(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    """The first field in which two contexts differ, e.g. "num_samples: 200 → now 300"."""
    if old is None or new is None:
        return "no context recorded" if old is None else "no context to compare with"
    return first_difference(dict(old), dict(new))


def describe(ctx: Mapping[str, Any] | None) -> str:
    """One line for people: 'context 1a2b3c4d (data 755336f0, 2000 samples, seed 1234, lenet 3f2a1b0c)'."""
    if ctx is None:
        return "no recorded context"
    parts = [f"data {str(ctx.get('data_version', '?'))[:8]}"]
    if "num_samples" in ctx:
        parts.append(f"{ctx['num_samples']} samples")
    parts.append(f"seed {ctx.get('seed', '?')}")
    parts += [f"{name} {e.get('weights_sha256', '?')[:8]}" for name, e in ctx.get("extractors", {}).items()]
    return f"context {short(context_hash(ctx))} ({', '.join(parts)})"


# ----------------------------------------------------------------------------- measurements of registered versions
def champion_cache_path(cache_dir: str | Path, model_name: str, version: str, run_id: str | None,
                        hash_: str) -> Path:
    """Where version `version` of `model_name` (trained by `run_id`) measured in context `hash_` is cached. The
    run id is in the key because a deleted and re-created model reuses version numbers."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return Path(cache_dir) / CACHE_SUBDIR / f"{safe}-v{version}-{(run_id or 'norun')[:12]}-{hash_}.json"


def read_measurement(path: Path, hash_: str) -> dict[str, float] | None:
    """The cached metrics at `path` when they were measured in context `hash_` and all finite; None otherwise
    (missing, damaged or foreign entries are measured again, never trusted)."""
    try:
        entry = json.loads(path.read_text())
        ok = (entry.get("format") == CACHE_FORMAT and context_hash(entry["context"]) == hash_
              and isinstance(entry.get("metrics"), dict))
        metrics = {str(k): float(v) for k, v in entry["metrics"].items()} if ok else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if metrics is None or not all(math.isfinite(v) for v in metrics.values()):
        return None
    return metrics


def write_measurement(path: Path, ctx: Mapping[str, Any], metrics: Mapping[str, float], source: str) -> None:
    """Cache a version's metrics measured in `ctx` (atomically; JSON). `source` names what measured them."""
    write_json(path, {"format": CACHE_FORMAT, "context": dict(ctx), "context_hash": context_hash(ctx),
                      "metrics": {k: float(v) for k, v in metrics.items()}, "source": source,
                      "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
