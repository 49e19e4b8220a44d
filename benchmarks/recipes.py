"""Every recipe (configs/recipes) against the default gate, same machine, same process, one run each.

    .venv/bin/python benchmarks/recipes.py                               # every recipe + the defaults (CPU: ~70 min)
    .venv/bin/python benchmarks/recipes.py --only conditional mlp        # a few (the defaults always run)
    .venv/bin/python benchmarks/recipes.py --max-seconds 120             # every recipe gets the same wall clock
    .venv/bin/python benchmarks/recipes.py --prepared DIR --classifier DIR   # reuse a prepared mnist5k + lenet
    .venv/bin/python benchmarks/recipes.py --smoke      # seconds: defaults + mlp, 4 steps, 500 images (temp dir)

Each recipe trains on mnist5k (32 px, the whole 5,000 images) from scratch at its own settings and step count,
on train.device=auto (a GPU when there is one), and its EMA generator is evaluated as the pipeline does
(2,000 samples, lenet feature space, eval.device=auto): fid_lenet, class_coverage, class_accuracy (conditional).
A recipe passes when it clears the default gate (params.yaml's gate.thresholds: fid_lenet ≤ 100,
class_coverage ≥ 0.9) and, when conditional, class_accuracy ≥ 0.95. The reference is the repo's defaults
(recipe=null) trained in the same process: each row prints its fid_lenet and training seconds as ratios to it.
Training seconds are TrainResult.wall_time_s (evaluation excluded). Quality at a fixed step count does not depend
on the machine's load (seeded, one thread); seconds do, so note the load beside them.

Writes benchmarks/results/recipes_<device>.json (every row) and each recipe's last sample grid to
docs/recipes/<name>.png (--grids).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_core.config import DataConfig, GateConfig, load_config, recipe_names  # noqa: E402
from gan_core.data import prepare  # noqa: E402
from gan_core.evaluation.classifier import train_classifier  # noqa: E402
from gan_core.evaluation.evaluate import evaluate  # noqa: E402
from gan_core.packaging.generator import load_generator  # noqa: E402
from gan_core.training.loop import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "defaults"  # recipe=null: params.yaml as it is
MIN_CLASS_ACCURACY = 0.95  # the conditional recipe's bar (issue 17), beside the default gate
SMOKE = {"train.steps": 4, "data.max_images": 500, "eval.num_samples": 200, "eval.classifier.epochs": 1,
         "eval.classifier.min_accuracy": 0.0}
"""A --smoke run's sizes: every recipe 4 steps on 500 images, 200 samples, a one-epoch classifier."""


def gate_failures(metrics: dict[str, float], conditional: bool) -> list[str]:
    """The default gate's thresholds (and class_accuracy for a conditional generator) that `metrics` misses."""
    failed = []
    for name, bound in GateConfig().thresholds.items():
        value = metrics.get(name, float("nan"))
        if not ((bound.max is None or value <= bound.max) and (bound.min is None or value >= bound.min)):
            failed.append(name)
    if conditional and not metrics.get("class_accuracy", 0.0) >= MIN_CLASS_ACCURACY:
        failed.append("class_accuracy")
    return failed


def run(name: str, work: Path, common: dict[str, object], max_seconds: float | None, grids: Path) -> dict:
    """Train one recipe (None-named: the defaults) from scratch, evaluate it, copy its grid; return its row."""
    recipe = None if name == REFERENCE else name
    overrides = {**common, "recipe": recipe, "train.out_dir": str(work / "train" / name),
                 "eval.out_dir": str(work / "eval" / name)}
    if max_seconds is not None:
        overrides |= {"train.max_seconds": max_seconds, "train.steps": 10**7}
    cfg = load_config(REPO / "params.yaml", overrides)
    result = train(cfg, resume=False)
    metrics = evaluate(cfg, load_generator(result.package_dir)).metrics
    shutil.copyfile(result.last_samples, grids / f"{name}.png")
    failed = gate_failures(metrics, cfg.model.conditional)
    row = {"recipe": name, "arch": cfg.model.arch, "loss": cfg.train.loss, "conditional": cfg.model.conditional,
           "steps": result.steps, "train_seconds": round(result.wall_time_s, 1),
           "s_per_step": round(result.wall_time_s / max(result.trained_steps, 1), 4),
           "fid_lenet": round(metrics["fid_lenet"], 2), "class_coverage": metrics["class_coverage"],
           "class_accuracy": metrics.get("class_accuracy"), "passes": not failed, "failed": failed,
           "device": result.device}
    print(json.dumps(row), flush=True)
    return row


OTHER_DATA = {"rgb64": "64 px RGB folders: benchmarks/rgb64.py"}
"""Recipes made for other data than mnist5k at 32 px, and the benchmark that measures each."""


def main() -> None:
    known = [name for name in recipe_names() if name not in OTHER_DATA]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=known, default=known, help="recipes (the defaults always run)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="train every recipe for this wall clock instead of its own steps (train.max_seconds)")
    parser.add_argument("--prepared", type=Path, help="a prepared mnist5k (32 px, 1 channel) to reuse")
    parser.add_argument("--classifier", type=Path, help="a lenet classifier trained on it (eval.classifier.out_dir)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--grids", type=Path, default=REPO / "docs" / "recipes")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run at a tiny size (into a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ganops-recipes-") as tmp:
        work = Path(tmp)
        if args.smoke:
            args.only, args.out, args.grids = ["mlp"], work / "results", work / "grids"
        args.grids.mkdir(parents=True, exist_ok=True)
        args.out.mkdir(parents=True, exist_ok=True)
        prepared = args.prepared or work / "prepared"
        classifier = args.classifier or work / "classifier"
        common: dict[str, object] = {
            "data.source": "mnist5k", "data.resolution": 32, "data.channels": 1, "data.max_images": None,
            "data.prepared_dir": str(prepared), "eval.classifier.out_dir": str(classifier),
            "eval.cache_dir": str(work / "cache"), "train.device": "auto", "eval.device": "auto",
            "train.sample_every": 10**7, "train.checkpoint_every": 10**7, **(SMOKE if args.smoke else {})}
        if args.prepared is None:
            prepare(DataConfig(source="mnist5k", resolution=32, channels=1, prepared_dir=str(prepared),
                               max_images=common.get("data.max_images")))
        if args.classifier is None:
            train_classifier(load_config(REPO / "params.yaml", common))
        stem = f"recipes_{device}" + (f"_{args.max_seconds:.0f}s" if args.max_seconds else "")
        rows: list[dict] = []
        for name in [REFERENCE, *args.only]:  # in the order given: the JSON grows row by row
            rows.append(run(name, work, common, args.max_seconds, args.grids))
            machine = {"device": device, "torch": torch.__version__, "cpus": os.cpu_count(),
                       "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
                       "load_average_at_end": os.getloadavg()}
            (args.out / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")

    ref = rows[0]
    print(f"\n{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average at end "
          f"{machine['load_average_at_end'][0]:.1f}; whole benchmark {time.perf_counter() - started:.0f} s")
    print("| recipe | family, loss | steps | fid_lenet | class_coverage | class_accuracy | train s | s/step "
          "| fid ÷ defaults | s ÷ defaults | default gate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        acc = f"{r['class_accuracy']:.3f}" if r["class_accuracy"] is not None else "–"
        family = f"{r['arch']}{' conditional' if r['conditional'] else ''}, {r['loss']}"
        verdict = "pass" if r["passes"] else f"fail ({', '.join(r['failed'])})"
        print(f"| {r['recipe']} | {family} | {r['steps']} | {r['fid_lenet']:.1f} | {r['class_coverage']:.2f} | {acc} "
              f"| {r['train_seconds']:.0f} | {r['s_per_step']:.3f} | {r['fid_lenet'] / ref['fid_lenet']:.2f}× "
              f"| {r['train_seconds'] / max(ref['train_seconds'], 1e-9):.2f}× | {verdict} |")
    print("ratio of each recipe's fid_lenet to the defaults': "
          + ", ".join(f"{r['recipe']} {r['fid_lenet'] / ref['fid_lenet']:.2f}x" for r in rows))


if __name__ == "__main__":
    main()
