"""Evaluation throughput and memory, each against a reference run in the same process.

    .venv/bin/python benchmarks/eval_throughput.py                 # mnist5k, lenet extractor, 2,000 samples
    .venv/bin/python benchmarks/eval_throughput.py --samples 5000 --memory-sizes 5000 20000
    .venv/bin/python benchmarks/eval_throughput.py --memory-sizes               # speed only
    .venv/bin/python benchmarks/eval_throughput.py --smoke     # seconds: 500 images, 200 samples, a 1-epoch lenet

1. ours vs direct: gan_core.evaluation.evaluate.evaluate (first run, real features not yet cached) against one
   torch_fidelity.calculate_metrics call on the same inputs (same generated Dataset, real Dataset, extractor,
   metrics). Ratio = direct time / our time; target >= 0.95 (our glue, class checks and files cost <= 5%).
2. cached: the second evaluation of the same generator on the same data (the real pass read from eval.cache_dir)
   vs the first (an empty cache: the real pass computed and written). Prints the ratio and the seconds saved.
3. memory: peak RSS of a fresh process evaluating N generated samples, for each N. Target: flat
   (generated images stream one batch at a time; only the (N, 128) features grow).
Speed: after one untimed warm-up evaluation, --rounds rounds of (direct, first, cached), each first on a new empty
cache; the medians are reported, so load from other jobs hits all three alike.
Everything runs on the CPU unless CUDA is present. Outputs go to a temp dir.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch_fidelity  # noqa: E402
from torch import nn  # noqa: E402

from gan_core.config import DataConfig, load_config  # noqa: E402
from gan_core.data import load_prepared, prepare  # noqa: E402
from gan_core.evaluation.classifier import train_classifier  # noqa: E402
from gan_core.evaluation.evaluate import evaluate  # noqa: E402
from gan_core.evaluation.fidelity import GeneratedImages, ImagesDataset, load_extractor, real_features  # noqa: E402


class Replay(nn.Module):
    """A stand-in generator that replays dataset images picked by its noise (cheap, deterministic)."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.register_buffer("images", images.float() / 127.5 - 1)
        self.latent_dim, self.num_classes = 4, 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.images[(z[:, 0].abs() * 1e6).long() % len(self.images)]


SMOKE: dict[str, object] = {}
"""Settings of a --smoke run: a one-epoch classifier, trusted whatever its accuracy (it only has to run)."""


def config(root: Path, samples: int, cache: str = "cache"):
    empty = root / "empty.yaml"
    empty.write_text("{}\n")
    return load_config(empty, {
        "data.prepared_dir": str(root / "prepared"), "eval.classifier.out_dir": str(root / "classifier"),
        "eval.out_dir": str(root / "eval"), "eval.cache_dir": str(root / cache), "eval.num_samples": samples,
        **SMOKE,
    })


def setup(root: Path, max_images: int | None = None) -> None:
    if not (root / "prepared" / "meta.json").is_file():
        prepare(DataConfig(source="mnist5k", resolution=32, max_images=max_images, prepared_dir=str(root / "prepared")))
    train_classifier(config(root, 2))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(root: Path, samples: int, rounds: int) -> dict:
    cfg = config(root, samples)
    real = load_prepared(cfg.data.prepared_dir)
    G = Replay(real.images)
    info = train_classifier(cfg)

    def direct() -> None:
        torch_fidelity.calculate_metrics(
            input1=GeneratedImages(G, samples, seed=cfg.eval.seed, batch_size=cfg.eval.batch_size),
            input2=ImagesDataset(real.images), feature_extractor="ganops-lenet",
            feature_extractor_weights_path=info["model_dir"], fid=True, kid=True, prc=True,
            kid_subset_size=min(1000, samples), batch_size=cfg.eval.batch_size, cuda=torch.cuda.is_available(),
            save_cpu_ram=True, cache=False, verbose=False)

    evaluate(config(root, samples, cache="cache-warmup"), G)  # imports, kernels, the classifier: not timed
    times: dict[str, list[float]] = {"direct_s": [], "ours_first_s": [], "ours_cached_s": []}
    for _ in range(rounds):
        fresh = config(root, samples, cache=f"cache-{time.time_ns()}")  # empty: this data's first evaluation
        times["direct_s"].append(timed(direct))
        times["ours_first_s"].append(timed(partial(evaluate, fresh, G)))
        times["ours_cached_s"].append(timed(partial(evaluate, fresh, G)))
        # The part the cache replaces, alone: the real pass computed (and written), then read back.
        extractor = load_extractor("lenet", info["model_dir"], torch.cuda.is_available())
        cache = root / f"cache-real-{time.time_ns()}"
        for kind in ("real_pass_computed_s", "real_pass_cached_s"):
            times.setdefault(kind, []).append(timed(partial(
                real_features, real.images, extractor, data_version="bench", cache_dir=cache,
                batch_size=cfg.eval.batch_size)))
    direct_s, first_s, cached_s, real_s, real_cached_s = (statistics.median(v) for v in times.values())
    return {"samples": samples, "num_real": len(real), "rounds": rounds, "direct_s": direct_s,
            "ours_first_s": first_s, "ours_cached_s": cached_s, "ratio_direct_over_ours": direct_s / first_s,
            "cached_speedup": first_s / cached_s, "cache_saves_s": first_s - cached_s,
            "real_pass_computed_s": real_s, "real_pass_cached_s": real_cached_s,
            "per_round": {k: [round(t, 2) for t in v] for k, v in times.items()}}


def peak_rss_mb(root: Path, samples: int) -> float:
    """Peak RSS of a fresh process (this script, --child-rss) evaluating `samples` generated images."""
    cmd = [sys.executable, __file__, "--root", str(root), "--child-rss", str(samples), *(["--smoke"] if SMOKE else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def child_rss(root: Path, samples: int) -> None:
    cfg = config(root, samples)
    evaluate(cfg, Replay(load_prepared(cfg.data.prepared_dir).images))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux reports KiB → MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[5000, 20000])
    parser.add_argument("--root", type=Path, default=None, help="work dir (default: a temp dir)")
    parser.add_argument("--child-rss", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run at a tiny size: does it run?")
    args = parser.parse_args()
    if args.smoke:
        SMOKE.update({"eval.classifier.epochs": 1, "eval.classifier.min_accuracy": 0.0})
        if args.child_rss is None:
            args.samples, args.memory_sizes, args.rounds = 200, [200, 400], 1
    if args.child_rss is not None:
        return child_rss(args.root, args.child_rss)
    root = args.root or Path(tempfile.mkdtemp(prefix="eval_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    setup(root, max_images=500 if args.smoke else None)
    result = {"machine": f"{torch.get_num_threads()} torch threads, cuda={torch.cuda.is_available()}"}
    result["speed"] = speed(root, args.samples, args.rounds)
    print(json.dumps(result["speed"], indent=2), flush=True)
    result["peak_rss_mb"] = {n: peak_rss_mb(root, n) for n in args.memory_sizes}
    sizes = args.memory_sizes
    if len(sizes) >= 2:
        result["rss_ratio_largest_over_smallest"] = result["peak_rss_mb"][sizes[-1]] / result["peak_rss_mb"][sizes[0]]
    result["this_process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))
    speed_result = result["speed"]
    print(f"ratio direct / ours (first evaluation) {speed_result['ratio_direct_over_ours']:.2f}x | "
          f"ratio first / cached evaluation {speed_result['cached_speedup']:.2f}x "
          f"(the cache saves {speed_result['cache_saves_s']:.2f} s)")


if __name__ == "__main__":
    main()
