"""Quality per wall-clock second: fid_lenet against training time for each recipe, same machine, same process.

    .venv/bin/python benchmarks/quality_per_time.py                       # every recipe, CPU here (~30 min)
    .venv/bin/python benchmarks/quality_per_time.py --only dcgan stylegan2 --budget-s 120
    .venv/bin/python benchmarks/quality_per_time.py --resolution 64 --budget-s 600   # on a GPU
    .venv/bin/python benchmarks/quality_per_time.py --smoke     # seconds: dcgan, one 4-step segment, 500 images

Each recipe trains in segments, resuming its own checkpoint (a resumed run is bit-identical to a straight one),
and after each segment its EMA generator is evaluated against the *full* mnist5k set in the lenet feature space
(the classifier trained once on the full set). Training seconds are TrainResult.wall_time_s summed over segments:
evaluation time is not counted. Segments grow ×2 until the recipe's training time passes --budget-s.

Recipes: `dcgan` (the repo's defaults) is the reference; `stylegan2` (equalised lr, so Adam at the paper's
β = (0, 0.99)); on a 500-image subset `dcgan-500` and `dcgan-500-ada` (the same, with train.augment=ada), where
D can memorise the data and augmentation should matter. The script prints each recipe's best fid_lenet within
the budget and its ratio to the reference's, and writes a JSON of every point, a plot (fid vs seconds) and each
recipe's last sample grid.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_core.config import Config, DataConfig, load_config  # noqa: E402
from gan_core.data import prepare  # noqa: E402
from gan_core.evaluation.classifier import train_classifier  # noqa: E402
from gan_core.evaluation.evaluate import evaluate  # noqa: E402
from gan_core.packaging.generator import load_generator  # noqa: E402
from gan_core.training.loop import train  # noqa: E402

RECIPES: dict[str, dict[str, object]] = {
    "dcgan": {},
    "stylegan2": {"model.arch": "stylegan2", "model.g_width": 16, "model.d_width": 16, "model.mapping_layers": 2,
                  "train.g_optimizer.lr": 0.002, "train.d_optimizer.lr": 0.002,
                  "train.g_optimizer.betas": [0.0, 0.99], "train.d_optimizer.betas": [0.0, 0.99]},
    "dcgan-500": {"data.max_images": 500},
    "dcgan-500-ada": {"data.max_images": 500, "train.augment": "ada"},
}
REFERENCE = "dcgan"
FIRST_SEGMENT = {"dcgan": 250, "stylegan2": 50, "dcgan-500": 250, "dcgan-500-ada": 250}
SMOKE = {"data.max_images": 500, "eval.num_samples": 200, "eval.classifier.epochs": 1,
         "eval.classifier.min_accuracy": 0.0}
"""A --smoke run's sizes: 500 images, 200 samples, a one-epoch classifier trusted whatever its accuracy."""


def run_recipe(name: str, work: Path, eval_cfg: Config, resolution: int, budget_s: float, grids: Path,
               first_segment: int | None = None) -> list[dict]:
    overrides = {"data.resolution": resolution, "data.prepared_dir": str(work / "data" / name),
                 "train.out_dir": str(work / "train" / name), "train.log_every": 50, "train.sample_every": 10**6,
                 "train.checkpoint_every": 10**6, **RECIPES[name]}
    points: list[dict] = []
    seconds, steps = 0.0, first_segment or FIRST_SEGMENT[name]
    while True:
        cfg = load_config(None, {**overrides, "train.steps": steps})
        prepare(cfg.data)
        result = train(cfg)  # resumes the previous segment's checkpoint
        seconds += result.wall_time_s
        metrics = evaluate(eval_cfg, load_generator(result.package_dir)).metrics
        point = {"recipe": name, "steps": steps, "train_seconds": round(seconds, 1),
                 "fid_lenet": round(metrics["fid_lenet"], 2), "class_coverage": metrics["class_coverage"]}
        if "ada_p" in result.final:
            point["ada_p"] = round(result.final["ada_p"], 3)
        print(json.dumps(point), flush=True)
        points.append(point)
        if seconds >= budget_s:
            # The EMA generator's grid from the fixed latent batch at the last step: what the budget bought.
            shutil.copyfile(result.last_samples, grids / f"{name}.png")
            return points
        steps *= 2


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in RECIPES:
        mine = [p for p in points if p["recipe"] == name]
        if mine:
            ax.plot([p["train_seconds"] for p in mine], [p["fid_lenet"] for p in mine], marker="o", label=name)
    ax.set(xlabel="training seconds", ylabel="fid_lenet (lower is better)", yscale="log",
           title="mnist5k: quality per training time")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--budget-s", type=float, default=240.0, help="training seconds per recipe")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run at a tiny size (into a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    smoke = SMOKE if args.smoke else {}
    if args.smoke:
        args.only, args.budget_s = [REFERENCE], 0.0
    with tempfile.TemporaryDirectory(prefix="ganops-quality-") as tmp:
        work = Path(tmp)
        if args.smoke:
            args.out = work / "results"
        full = DataConfig(source="mnist5k", resolution=args.resolution, prepared_dir=str(work / "data" / "full"),
                          max_images=smoke.get("data.max_images"))
        prepare(full)
        eval_cfg = load_config(None, {
            "data.resolution": args.resolution, "data.prepared_dir": full.prepared_dir,
            "eval.out_dir": str(work / "eval"), "eval.cache_dir": str(work / "cache"),
            "eval.classifier.out_dir": str(work / "classifier"), "eval.classifier.resolution": args.resolution,
            **{k: v for k, v in smoke.items() if k.startswith("eval.")}})
        train_classifier(eval_cfg)
        started = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        stem = f"quality_per_time_{device}_{args.resolution}px"
        grids = args.out / f"{stem}_grids"
        grids.mkdir(parents=True, exist_ok=True)
        points = [p for name in args.only
                  for p in run_recipe(name, work, eval_cfg, args.resolution, args.budget_s, grids,
                                      first_segment=4 if args.smoke else None)]
        (args.out / f"{stem}.json").write_text(json.dumps(points, indent=1) + "\n")
        plot(points, args.out / f"{stem}.png")

    best = {name: min(p["fid_lenet"] for p in points if p["recipe"] == name) for name in args.only}
    print(f"\n{device}, {args.resolution} px, budget {args.budget_s:.0f} training s per recipe "
          f"(whole benchmark {time.perf_counter() - started:.0f} s)")
    print("| recipe | best fid_lenet | at training s | ratio to dcgan's best (lower is better) |")
    print("| --- | --- | --- | --- |")
    for name, fid in best.items():
        at = next(p["train_seconds"] for p in points if p["recipe"] == name and p["fid_lenet"] == fid)
        ratio = f"{fid / best[REFERENCE]:.2f}×" if REFERENCE in best else "-"
        print(f"| {name} | {fid:.2f} | {at:.0f} | {ratio} |")
    if REFERENCE in best:
        print("ratio of each recipe's best fid_lenet to dcgan's: "
              + ", ".join(f"{name} {fid / best[REFERENCE]:.2f}x" for name, fid in best.items()))


if __name__ == "__main__":
    main()
