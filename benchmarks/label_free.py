"""Does the label-free feature space (simclr) measure what FID should? Known cases and one training's checkpoints,
against the lenet space where there are labels.

    .venv/bin/python benchmarks/label_free.py                      # mnist5k + the RGB shapes folder (CPU: ~30 min)
    .venv/bin/python benchmarks/label_free.py --seeds 0 1 2        # known cases over three encoder seeds
    .venv/bin/python benchmarks/label_free.py --smoke              # seconds: tiny sizes, temp dir, nothing recorded

1. Known cases, per encoder seed (a stand-in for another CPU or thread count, whose rounding trains another
   encoder): two halves of the real data (2,500 vs 2,500 on mnist5k), one half with Gaussian noise of σ = 8, 16,
   32 and 64 grey levels, uniform noise, and a collapsed sampler (10 real images repeated to the half's size),
   each against the other half: fid_simclr, kid_simclr, precision/recall_simclr and cluster_coverage_simclr,
   and fid_lenet beside them on mnist5k. The same on the shapes folder (tests/shapes.py: 3,000 RGB images at
   64 px, no labels), simclr only.
2. Checkpoints: the default DCGAN (params.yaml) trained on mnist5k, its EMA generator saved at 8 step counts
   from 100 to 2,000, each evaluated as the pipeline does (2,000 samples) in both spaces; Spearman's rank
   correlation of fid_simclr with fid_lenet over them.

Each space's reference is its own real halves: the printed ratios are fid(case) / fid(real halves), measured in
the same process. Writes benchmarks/results/label_free_cpu.json.
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
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/shapes.py: the synthetic RGB folder

from shapes import write_shapes  # noqa: E402

from gan_core.config import load_config  # noqa: E402
from gan_core.data import load_prepared, prepare  # noqa: E402
from gan_core.evaluation.classifier import train_classifier  # noqa: E402
from gan_core.evaluation.encoder import cluster_coverage, load_encoder, train_encoder  # noqa: E402
from gan_core.evaluation.evaluate import evaluate  # noqa: E402
from gan_core.evaluation.fidelity import ImagesDataset, extract_features, fidelity_metrics, load_extractor  # noqa: E402
from gan_core.training.loop import train  # noqa: E402

NOISE_LEVELS = (8, 16, 32, 64)
COLLAPSED_IMAGES = 10
STEPS = (100, 200, 300, 500, 750, 1000, 1500, 2000)
SMOKE = {"max_images": 200, "epochs": 1, "steps": (2, 4, 6, 8, 10, 12), "samples": 100, "shapes": 120, "side": 16}


def config(root: Path, prepared: Path, **overrides: object):
    empty = root / "empty.yaml"
    empty.write_text("{}\n")
    base = {"data.prepared_dir": str(prepared), "eval.classifier.out_dir": str(root / "classifier"),
            "eval.encoder.out_dir": str(root / "encoder"), "eval.cache_dir": str(root / "cache"),
            "eval.out_dir": str(root / "eval"), "eval.device": "cpu", "train.device": "cpu",
            "train.out_dir": str(root / "train"), "eval.extractors": ["lenet", "simclr"]}
    return load_config(empty, {**base, **overrides})


def noisy(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def known_cases(images: torch.Tensor, spaces: dict[str, str], min_share: float = 0.2) -> dict[str, dict]:
    """Each case's metrics against the real half B, in each space ({name: model dir})."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    half = len(images) // 2
    a, b = images[order[:half]], images[order[half: 2 * half]]
    cases = {"real halves": a, **{f"noise {s}": noisy(a, s, seed=s) for s in NOISE_LEVELS},
             "uniform noise": torch.randint(0, 256, a.shape, generator=torch.Generator().manual_seed(1),
                                            dtype=torch.uint8),
             f"collapsed ({COLLAPSED_IMAGES} images)": a[:COLLAPSED_IMAGES].repeat(
                 -(-half // COLLAPSED_IMAGES), 1, 1, 1)[:half]}
    rows: dict[str, dict] = {case: {} for case in cases}
    for space, weights in spaces.items():
        extractor = load_extractor(space, weights)
        real = extract_features(ImagesDataset(b), extractor, batch_size=250)
        encoder = load_encoder(weights) if space == "simclr" else None
        for case, fake in cases.items():
            metrics = fidelity_metrics(ImagesDataset(fake), real, extractor, batch_size=250,
                                       kid_subset_size=min(1000, half), seed=0)
            rows[case].update({k: round(v, 4) for k, v in metrics.items() if not k.endswith("_std")})
            if encoder is not None:
                clusters = encoder.nearest_cluster(encoder.features(fake))
                rows[case]["cluster_coverage_simclr"] = cluster_coverage(clusters, encoder.cluster_shares, min_share)
    return rows


def checkpoints(root: Path, prepared: Path, extractors: dict, steps: tuple[int, ...], samples: int,
                smoke: bool) -> list[dict]:
    """Train the default DCGAN once, saving its package at each step count; evaluate each in both spaces
    (`extractors`: the overrides that name the trained classifier and encoder)."""
    overrides = {**extractors, "eval.num_samples": samples, "train.log_every": 100, "train.sample_every": 10**6,
                 "train.checkpoint_every": 10**6}
    if smoke:
        overrides |= {"model.g_width": 8, "model.d_width": 8, "train.batch_size": 8, "eval.classifier.min_accuracy": 0,
                      "eval.kid_subset_size": samples}
    params_yaml = load_config(REPO / "params.yaml")  # the defaults' training settings (the swept learning rates)
    for section in ("g_optimizer", "d_optimizer"):
        lr = getattr(params_yaml.train, section).lr
        overrides[f"train.{section}.lr"] = lr
    rows = []
    for n in steps:
        cfg = config(root, prepared, **overrides, **{"train.steps": n})
        result = train(cfg)  # resumes the previous step count's checkpoint: one training, saved along the way
        package = root / "checkpoints" / f"step{n:05d}"
        shutil.copytree(result.package_dir, package, dirs_exist_ok=True)
        metrics = evaluate(cfg, str(package)).metrics
        rows.append({"steps": n, **{k: round(v, 4) for k, v in metrics.items() if not k.endswith("_std")}})
        print(f"  step {n}: fid_lenet {metrics['fid_lenet']:.1f}, fid_simclr {metrics['fid_simclr']:.2f}, "
              f"cluster_coverage_simclr {metrics['cluster_coverage_simclr']:.2f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="encoder seeds of the known cases")
    parser.add_argument("--root", type=Path, default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--skip-checkpoints", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.root or Path(tempfile.mkdtemp(prefix="ganops-label-free-"))
    root.mkdir(parents=True, exist_ok=True)
    small = SMOKE if args.smoke else {}
    started = time.time()

    mnist = root / "mnist5k"
    if not (mnist / "meta.json").exists():
        prepare(config(root, mnist, **({"data.max_images": small["max_images"]} if small else {})).data)
    shapes_dir = root / "shapes"
    if not shapes_dir.exists():
        write_shapes(shapes_dir, small.get("shapes", 3000), size=small.get("side", 64))
    shapes = root / "shapes-prepared"
    if not (shapes / "meta.json").exists():
        prepare(config(root, shapes, **{"data.source": f"folder:{shapes_dir}", "data.channels": 3,
                                        "data.resolution": small.get("side", 64), "eval.extractors": ["simclr"]}).data)

    epochs = {"eval.encoder.epochs": small["epochs"]} if small else {}
    classifier_epochs = {"eval.classifier.epochs": 1} if small else {}
    cls = train_classifier(config(root, mnist, **classifier_epochs))
    results: dict = {"machine": "2-core CPU sandbox (see benchmarks/README.md)", "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "classifier_accuracy": cls["holdout_accuracy"],
                     "known_cases": {}, "encoders": {}}
    for dataset, prepared, spaces in (("mnist5k", mnist, ("lenet", "simclr")), ("shapes", shapes, ("simclr",))):
        for seed in args.seeds:
            t = time.time()
            sub = root / f"encoder-{dataset}-{seed}"
            enc = train_encoder(config(root, prepared, **epochs, **{"eval.encoder.seed": seed,
                                                                    "eval.encoder.out_dir": str(sub)}))
            results["encoders"][f"{dataset} seed {seed}"] = {
                "seconds": round(time.time() - t, 1), "trained": enc["trained"], "final_loss": enc["final_loss"],
                "chance_loss": enc["chance_loss"], "real_halves_fid": enc["real_halves_fid"]}
            weights = {"lenet": cls["model_dir"], "simclr": enc["model_dir"]}
            rows = known_cases(load_prepared(prepared).images, {s: weights[s] for s in spaces})
            results["known_cases"][f"{dataset} seed {seed}"] = rows
            print(f"{dataset}, encoder seed {seed} (trained in {time.time() - t:.0f} s):", flush=True)
            for case, row in rows.items():
                print(f"  {case:<26} " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                 if k.split("_")[0] in ("fid", "cluster")), flush=True)

    if not args.skip_checkpoints:
        trained = {**classifier_epochs, **epochs, "eval.encoder.seed": args.seeds[0],
                   "eval.encoder.out_dir": str(root / f"encoder-mnist5k-{args.seeds[0]}")}
        rows = checkpoints(root, mnist, trained, small.get("steps", STEPS), small.get("samples", 2000), args.smoke)
        rho = spearmanr([r["fid_lenet"] for r in rows], [r["fid_simclr"] for r in rows]).statistic
        results["checkpoints"] = {"rows": rows, "spearman_fid_simclr_fid_lenet": float(rho)}
        print(f"Spearman(fid_simclr, fid_lenet) over {len(rows)} checkpoints: {rho:.3f}")

    results["seconds"] = round(time.time() - started)
    for key, rows in results["known_cases"].items():
        halves = rows["real halves"]["fid_simclr"]
        worst = rows[f"collapsed ({COLLAPSED_IMAGES} images)"]["fid_simclr"]
        print(f"{key}: ratio fid_simclr collapsed/real halves {worst / max(halves, 1e-9):.1f}x, "
              f"uniform/real halves {rows['uniform noise']['fid_simclr'] / max(halves, 1e-9):.1f}x")
    if not args.smoke:
        out = REPO / "benchmarks" / "results" / "label_free_cpu.json"
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
