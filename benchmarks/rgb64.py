"""The rgb64 recipe end to end on a flat RGB folder: prepare at 64 px, the label-free encoder, training, evaluation
and the default (label-free) gate's thresholds, timed; the grid goes to docs/recipes/rgb64.png.

    .venv/bin/python benchmarks/rgb64.py                    # 3,000 shapes at 64 px, the recipe (CPU: ~15 min)
    .venv/bin/python benchmarks/rgb64.py --steps 500 1000 2000 3000   # fid along the way (one training, resumed)
    .venv/bin/python benchmarks/rgb64.py --smoke            # seconds: 120 images at 16 px, 4 steps (temp dir)

The folder is tests/shapes.py's: 3,000 coloured shapes (3 kinds × 4 colours, random size, place and angle) on dark
backgrounds, no labels, so params.yaml's defaults route it to the simclr space and its gate (fid_simclr ≤ 10,
cluster_coverage_simclr ≥ 0.9). The reference is the data itself: the printed ratio is the recipe's fid_simclr
over the real halves' (the encoder's floor on this data), measured in the same process.
Writes benchmarks/results/rgb64_cpu.json.
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
from torchvision.utils import save_image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/shapes.py: the synthetic RGB folder

from shapes import write_shapes  # noqa: E402

from flows.gate import threshold_checks  # noqa: E402
from gan_core.config import load_config  # noqa: E402
from gan_core.data import load_prepared, prepare  # noqa: E402
from gan_core.evaluation.evaluate import evaluate  # noqa: E402
from gan_core.evaluation.extractors import train_extractors  # noqa: E402
from gan_core.training.loop import train  # noqa: E402

SMOKE = {"count": 120, "side": 16, "steps": [4], "overrides": {"eval.encoder.epochs": 1, "eval.encoder.clusters": 8,
                                                               "eval.num_samples": 100, "eval.kid_subset_size": 50}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="step counts to evaluate at "
                        "(default: the recipe's train.steps)")
    parser.add_argument("--count", type=int, default=3000, help="images in the shapes folder")
    parser.add_argument("--root", type=Path, default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.root or Path(tempfile.mkdtemp(prefix="ganops-rgb64-"))
    root.mkdir(parents=True, exist_ok=True)
    small = SMOKE if args.smoke else {}
    side = small.get("side", 64)
    folder = root / "shapes"
    if not folder.exists():
        write_shapes(folder, small.get("count", args.count), size=side)
    overrides = {"recipe": "rgb64", "data.source": f"folder:{folder}", "data.resolution": side, "data.channels": 3,
                 "data.prepared_dir": str(root / "prepared"), "train.out_dir": str(root / "train"),
                 "train.device": "cpu", "eval.device": "cpu", "eval.out_dir": str(root / "eval"),
                 "eval.cache_dir": str(root / "cache"), "eval.classifier.out_dir": str(root / "classifier"),
                 "eval.encoder.out_dir": str(root / "encoder"), "train.checkpoint_every": 500,
                 **small.get("overrides", {})}
    cfg = load_config(REPO / "params.yaml", overrides)
    assert cfg.eval.extractors == ["simclr"] and cfg.gate.primary_metric == "fid_simclr", "not routed label-free"

    timings: dict[str, float] = {}
    t = time.perf_counter()
    prepare(cfg.data)
    timings["prepare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    encoder = train_extractors(cfg)["simclr"]
    timings["encoder_s"] = time.perf_counter() - t
    rows = []
    for steps in args.steps or small.get("steps") or [cfg.train.steps]:
        step_cfg = load_config(REPO / "params.yaml", {**overrides, "train.steps": steps})
        t = time.perf_counter()
        result = train(step_cfg)  # resumes the previous count's checkpoint: one training
        trained_s = time.perf_counter() - t
        t = time.perf_counter()
        metrics = evaluate(step_cfg, result.package_dir).metrics
        checks = threshold_checks(metrics, step_cfg.gate)
        rows.append({"steps": steps, "train_s": round(trained_s, 1), "evaluate_s": round(time.perf_counter() - t, 1),
                     **{k: round(v, 4) for k, v in metrics.items() if not k.endswith("_std")},
                     "gate": "pass" if all(c.passed for c in checks) else "fail",
                     "reasons": [c.reason for c in checks]})
        print(json.dumps(rows[-1]), flush=True)
    train_total = sum(r["train_s"] for r in rows)
    last = rows[-1]
    report = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "load_average_at_end": os.getloadavg()},
              "recipe": {k: v for k, v in cfg.flat().items() if k.startswith(("model.", "train.steps",
                                                                               "train.batch_size"))},
              "images": small.get("count", args.count), "real_halves_fid_simclr": encoder["real_halves_fid"],
              **{k: round(v, 1) for k, v in timings.items()}, "train_s": round(train_total, 1), "rows": rows}
    print(f"rgb64: {last['steps']} steps, training {train_total:.0f} s (+ encoder {timings['encoder_s']:.0f} s, "
          f"prepare {timings['prepare_s']:.0f} s), fid_simclr {last['fid_simclr']:.2f}, cluster_coverage_simclr "
          f"{last['cluster_coverage_simclr']:.2f}: gate {last['gate']}; ratio fid_simclr / real halves "
          f"{last['fid_simclr'] / max(encoder['real_halves_fid'], 1e-9):.1f}x")
    if not args.smoke:
        (REPO / "benchmarks" / "results" / "rgb64_cpu.json").write_text(json.dumps(report, indent=1) + "\n")
        shutil.copyfile(result.last_samples, REPO / "docs" / "recipes" / "rgb64.png")
        data_grid(cfg.data.prepared_dir, REPO / "docs" / "recipes" / "rgb64-data.png")
        print("wrote benchmarks/results/rgb64_cpu.json, docs/recipes/rgb64.png and rgb64-data.png")


def data_grid(prepared: str, out: Path) -> None:
    """The first 64 training images in the layout of a sample grid, to set beside it."""
    images = load_prepared(prepared).images[:64].float() / 255.0  # (64, 3, H, W)
    save_image(images, out, nrow=8, padding=2)


if __name__ == "__main__":
    main()
