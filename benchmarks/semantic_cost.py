"""What cyclegan's semantic-consistency term costs per step: the translation demo's recipe with the term on (the
default) against the same recipe with train.semantic_weight=0, same process, same data, rounds alternating.

    .venv/bin/python benchmarks/semantic_cost.py                      # 200 steps × 3 rounds each, CPU here
    .venv/bin/python benchmarks/semantic_cost.py --steps 500 --rounds 5
    .venv/bin/python benchmarks/semantic_cost.py --smoke              # seconds: 2 steps, 1 round, 300 images

The recipe is configs/cyclegan-digits.yaml (digits ↔ mnist5k at 16 px, widths 16, 3 residual blocks, batch 16),
prepared and its classifiers and judges trained once, outside the timing. Each round trains both from scratch
(`Trainer.run()`, end to end) and times the seconds per step; the medians of each and their ratio are printed,
with the steps that fit ten minutes at the term's median speed (the demo trains 4,000).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_core.config import load_config  # noqa: E402
from gan_core.data import prepare  # noqa: E402
from gan_core.evaluation.classifier import train_classifier  # noqa: E402
from gan_core.training.loop import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "cyclegan-digits.yaml"
SMOKE = {"data.max_images": 300, "eval.classifier.epochs": 1}


def seconds_per_step(overrides: dict[str, object], steps: int) -> float:
    cfg = load_config(RECIPE, {**overrides, "train.steps": steps})
    trainer = Trainer(cfg, resume=False)
    start = time.perf_counter()
    trainer.run()
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2 steps, 1 round, 300 images: checks it still runs")
    args = parser.parse_args()
    steps, rounds = (2, 1) if args.smoke else (args.steps, args.rounds)

    with tempfile.TemporaryDirectory(prefix="semantic-cost-") as tmp:
        work = Path(tmp)
        base = {"data.prepared_dir": str(work / "prepared"), "eval.classifier.out_dir": str(work / "classifier"),
                "train.log_every": 10**6, "train.sample_every": 10**6, "train.checkpoint_every": 10**6,
                **(SMOKE if args.smoke else {})}
        cfg = load_config(RECIPE, base)
        prepare(cfg.data)
        train_classifier(cfg)  # the classifiers and the judges, once
        timings: dict[str, list[float]] = {"plain": [], "semantic": []}
        for r in range(rounds):
            for name, weight in (("plain", 0.0), ("semantic", cfg.train.semantic_weight)):
                out = {"train.out_dir": str(work / f"{name}-{r}"), "train.semantic_weight": weight}
                timings[name].append(seconds_per_step({**base, **out}, steps))
                print(f"round {r + 1} {name}: {timings[name][-1]:.4f} s/step", flush=True)
    plain, semantic = (statistics.median(timings[k]) for k in ("plain", "semantic"))
    print(f"median s/step: plain {plain:.4f}, semantic {semantic:.4f}; "
          f"steps in 10 minutes with the term: {int(600 / semantic):,}")
    print(f"ratio semantic/plain {semantic / plain:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
