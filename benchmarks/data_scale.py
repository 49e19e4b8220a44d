"""A team's own images at scale: what preparing, versioning, training and evaluating cost as the collection grows.

    .venv/bin/python benchmarks/data_scale.py                               # N = 5k, 20k, 100k at 64 px RGB
    .venv/bin/python benchmarks/data_scale.py --sizes 5000,20000,100000,200000
    .venv/bin/python benchmarks/data_scale.py --sizes 500,1000 --steps 20   # a quick look (minutes)
    .venv/bin/python benchmarks/data_scale.py --smoke                       # seconds: it still runs (tests)

For each N it builds a folder of N synthetic 96x96 RGB PNGs in 10 class folders (random shapes on gradients plus
noise: not trivially compressible; generated once into --cache, default /tmp/ganops-data-scale, and reused), then
runs each measured command as its own process (`python -m gan_core ...`, OMP_NUM_THREADS=1) and reads that
process's peak RSS from the kernel (os.wait4):

  prepare          full prepare of the folder at 64 px RGB (data.resolution=64 data.channels=3)
  dvc push         `dvc add` + `dvc push` of the prepared dataset to a local DVC remote (bytes = what the remote holds)
  prepare +5%      5% more images added to the folder (in every class), then prepare again
  push +5%         `dvc add` + `dvc push` of the new version: the bytes and objects the remote gained
  train            200 steps of the default DCGAN (batch 64) on the prepared set, images/s from its metrics.json;
                   --rounds runs per size, alternating the sizes (the median is reported)
  evaluate         `python -m gan_core evaluate` with the lenet extractor (classifier trained first, 1 epoch, not
                   measured), 2,000 samples, the real pass included (not cached)

and prints one row per N with the ratios the issue's targets are stated in: re-prepare / full prepare, bytes pushed
for +5% / the collection's bytes, and peak RSS and images/s relative to the smallest N. The reference is the
smallest N's run in the same invocation. Results also go to benchmarks/results/data_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
SIDE = 96


# ----------------------------------------------------------------------------- the synthetic collection
def _image(label: int, index: int) -> bytes:
    """One PNG: a gradient background, 1-3 shapes whose kind and hue follow the class, Gaussian noise."""
    import io

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(label * 10_000_019 + index)
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))[..., None]
    background = a + (b - a) * (t - t.min()) / (np.ptp(t) + 1e-9)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    hue = np.array([(label * 37) % 256, (label * 91) % 256, (label * 173) % 256])
    for _ in range(rng.integers(1, 4)):
        x0, y0 = rng.integers(0, SIDE - 30, 2)
        w, h = rng.integers(15, 60, 2)
        colour = tuple(int(c) for c in np.clip(hue + rng.integers(-40, 40, 3), 0, 255))
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        (draw.ellipse if label % 2 else draw.rectangle)(box, fill=colour)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 8, (SIDE, SIDE, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, format="png")
    return out.getvalue()


def _write_pool_part(args: tuple[Path, int, int, int]) -> int:
    pool, label, first, stop = args
    for i in range(first, stop):
        path = pool / f"class{label}" / f"{i:07d}.png"
        if not path.exists():
            path.write_bytes(_image(label, i))
    return stop - first


def ensure_pool(pool: Path, per_class: int, workers: int) -> None:
    """pool/class<k>/<i>.png for i < per_class: written once, reused by every run and size."""
    for label in range(CLASSES):
        (pool / f"class{label}").mkdir(parents=True, exist_ok=True)
    have = min(len(list((pool / f"class{k}").iterdir())) for k in range(CLASSES))
    if have >= per_class:
        return
    print(f"generating {CLASSES * (per_class - have):,} images into {pool} ...", flush=True)
    step = 500
    jobs = [(pool, label, i, min(i + step, per_class)) for label in range(CLASSES)
            for i in range(have, per_class, step)]
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(_write_pool_part, jobs))


def link_images(pool: Path, folder: Path, first: int, stop: int) -> None:
    """Images first..stop-1 of every class, hard-linked from the pool (no copy, same bytes)."""
    for label in range(CLASSES):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        for i in range(first, stop):
            name = f"{i:07d}.png"
            os.link(pool / f"class{label}" / name, folder / f"class{label}" / name)


# ----------------------------------------------------------------------------- measuring a process
def measure(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Run a command; return its wall seconds, CPU seconds (user + system) and peak RSS (MB) as the kernel counted
    them. CPU seconds barely move when other jobs share the cores; wall seconds do."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(65536), b""):
        out += chunk
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}")
    return {"s": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "output": out.decode(errors="replace")}


def remote_state(remote: Path) -> tuple[int, int]:
    files = [p for p in remote.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def prepare_and_push(n: int, pool: Path, work: Path, env: dict[str, str]) -> dict[str, float]:
    """Full prepare, push, +5%, prepare again, push again: times, peak RSS, bytes and objects the remote gained."""
    per_class, more = n // CLASSES, max(1, n // CLASSES // 20)  # +5%
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "params.yaml").write_text("{}\n")  # the code's defaults, then the overrides below
    images, prepared, remote = work / "images", work / "prepared", work / "remote"
    link_images(pool, images, 0, per_class)
    dvc = str(Path(sys.executable).parent / "dvc")
    row: dict[str, float] = {"n": n}

    first = measure([*GAN_CORE, "prepare", *data_args(work)], work, env)
    row.update(prepare_s=first["s"], prepare_cpu_s=first["cpu_s"], prepare_rss_mb=first["rss_mb"])
    row["collection_mb"] = sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file()) / 2**20
    for args in (["init", "--no-scm", "-q"], ["remote", "add", "-d", "local", str(remote)]):
        subprocess.run([dvc, *args], cwd=work, check=True, capture_output=True)
    pushed = measure([dvc, "add", "-q", "prepared"], work, env)["s"] + measure([dvc, "push", "-q"], work, env)["s"]
    bytes_1, objects_1 = remote_state(remote)
    row.update(push_s=pushed, remote_mb=bytes_1 / 2**20, remote_objects=objects_1)

    link_images(pool, images, per_class, per_class + more)
    again = measure([*GAN_CORE, "prepare", *data_args(work)], work, env)
    row.update(reprepare_s=again["s"], reprepare_cpu_s=again["cpu_s"], reprepare_rss_mb=again["rss_mb"])
    pushed = measure([dvc, "add", "-q", "prepared"], work, env)["s"] + measure([dvc, "push", "-q"], work, env)["s"]
    bytes_2, objects_2 = remote_state(remote)
    row.update(push2_s=pushed, push2_mb=(bytes_2 - bytes_1) / 2**20, push2_objects=objects_2 - objects_1,
               collection2_mb=sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file()) / 2**20)
    shutil.rmtree(remote)
    shutil.rmtree(work / ".dvc")  # its cache: a second copy of the collection
    return row


GAN_CORE = [sys.executable, "-m", "gan_core"]


def data_args(work: Path) -> list[str]:
    return [f"data.source=folder:{work / 'images'}", "data.resolution=64", "data.channels=3",
            f"data.prepared_dir={work / 'prepared'}"]


TRAIN = """
import json, sys, time
from gan_core.config import load_config
from gan_core.training.loop import Trainer
cfg = load_config(sys.argv[1], sys.argv[2:])
trainer = Trainer(cfg, resume=False)
cpu = time.process_time()
result = trainer.run()
cpu = time.process_time() - cpu
print(json.dumps({"img_s": result.images_per_s, "cpu_img_s": result.trained_steps * cfg.train.batch_size / cpu}))
"""


def train(work: Path, steps: int, env: dict[str, str]) -> dict[str, float]:
    """`steps` steps of the default DCGAN (64 px RGB, batch 64), Trainer.run() as `python -m gan_core train` runs it:
    wall time, peak RSS, images/s over the loop (its own figure) and images per CPU-second of the loop."""
    out = work / "outputs" / "train"
    run = measure([sys.executable, "-c", TRAIN, str(work / "params.yaml"), *data_args(work), f"train.steps={steps}",
                   "train.device=cpu", "train.log_every=50", f"train.sample_every={steps}",
                   f"train.checkpoint_every={steps}", f"train.out_dir={out}"], work, env)
    figures = json.loads(run["output"].strip().splitlines()[-1])
    return {"s": run["s"], "rss_mb": run["rss_mb"], **figures}


def evaluate(work: Path, samples: int, env: dict[str, str]) -> dict[str, float]:
    """The lenet classifier (1 epoch, not measured), then one evaluation with the real pass (nothing cached)."""
    out = work / "outputs"
    settings = [f"eval.num_samples={samples}", "eval.device=cpu", f"eval.out_dir={out / 'eval'}",
                f"eval.cache_dir={out / 'cache'}", f"eval.classifier.out_dir={out / 'classifier'}",
                "eval.classifier.epochs=1", "eval.classifier.min_accuracy=0", f"train.out_dir={out / 'train'}"]
    measure([*GAN_CORE, "classifier", *data_args(work), *settings], work, env)
    run = measure([*GAN_CORE, "evaluate", "--no-mlflow", *data_args(work), *settings], work, env)
    return {"s": run["s"], "rss_mb": run["rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,20000,100000", help="comma-separated image counts")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="training runs per size, alternating the sizes")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ganops-data-scale"))
    parser.add_argument("--workers", type=int, default=2, help="processes generating the images (once)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_scale_cpu.json")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, everything under ./data-scale-smoke (nothing recorded): checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.steps, args.samples, args.rounds = "200,400", 4, 100, 1
        args.cache = Path.cwd() / "data-scale-smoke"
        args.out = args.cache / "data_scale.json"
    sizes = [int(s) for s in args.sizes.split(",")]
    ensure_pool(args.cache / "pool", max(sizes) // CLASSES + max(1, max(sizes) // CLASSES // 20), args.workers)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1",
           "GANOPS_OFFLINE": "1"}
    works = {n: args.cache / f"work-{n}" for n in sizes}
    rows = []
    for n in sizes:
        print(f"N = {n:,}: prepare, push, +5%, prepare, push ...", flush=True)
        rows.append(prepare_and_push(n, args.cache / "pool", works[n], env))
        print(json.dumps(rows[-1]), flush=True)
    # Training rounds alternate the sizes, so the load other jobs put on the machine hits every size alike; the
    # median images/s is reported, the peak RSS of the first round.
    for r in range(args.rounds):
        for row in rows:
            run = train(works[row["n"]], args.steps, env)
            row.setdefault("train_rss_mb", run["rss_mb"])
            row.setdefault("train_img_s_rounds", []).append(run["img_s"])
            row.setdefault("train_cpu_img_s_rounds", []).append(run["cpu_img_s"])
            print(f"train N = {row['n']:,} round {r + 1}: {run['img_s']:.1f} img/s, {run['cpu_img_s']:.1f} "
                  f"img/CPU-s, {run['rss_mb']:.0f} MB", flush=True)
    for row in rows:
        row["train_img_s"] = statistics.median(row["train_img_s_rounds"])
        row["train_cpu_img_s"] = statistics.median(row["train_cpu_img_s_rounds"])
        run = evaluate(works[row["n"]], args.samples, env)
        row.update(eval_s=run["s"], eval_rss_mb=run["rss_mb"])
        print(json.dumps(row), flush=True)
        shutil.rmtree(works[row["n"]])  # the pool stays
    ref = rows[0]
    print()
    print("| images | prepare s | prepare +5% s: ratio wall (CPU) | pushed for +5%: MB of collection MB, ratio, "
          "objects | peak RSS MB prepare / train / evaluate (ratio to first) | train img/s wall (ratio), per CPU-s "
          "(ratio) | evaluate s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        def rss(key: str, r: dict = r) -> str:
            return f"{r[key]:,.0f} ({r[key] / ref[key]:.2f}×)"

        print(f"| {r['n']:,} | {r['prepare_s']:.1f} | {r['reprepare_s']:.1f}: {r['reprepare_s'] / r['prepare_s']:.0%} "
              f"({r['reprepare_cpu_s'] / r['prepare_cpu_s']:.0%}) "
              f"| {r['push2_mb']:.1f} of {r['collection2_mb']:,.0f}, {r['push2_mb'] / r['collection2_mb']:.1%}, "
              f"{r['push2_objects']} of {r['remote_objects'] + r['push2_objects']} "
              f"| {rss('prepare_rss_mb')} / {rss('train_rss_mb')} / {rss('eval_rss_mb')} "
              f"| {r['train_img_s']:.0f} ({r['train_img_s'] / ref['train_img_s']:.2f}×), "
              f"{r['train_cpu_img_s']:.0f} ({r['train_cpu_img_s'] / ref['train_cpu_img_s']:.2f}×) "
              f"| {r['eval_s']:.0f} |")
    last = rows[-1]
    def ratio(key: str, of: str | None = None) -> float:
        return last[key] / (last[of] if of else ref[key])

    print(f"\nratio at {last['n']:,} images against {ref['n']:,}: re-prepare/prepare "
          f"{ratio('reprepare_s', 'prepare_s'):.2f}x, pushed/collection {ratio('push2_mb', 'collection2_mb'):.3f}x, "
          f"peak RSS prepare {ratio('prepare_rss_mb'):.2f}x, train {ratio('train_rss_mb'):.2f}x, evaluate "
          f"{ratio('eval_rss_mb'):.2f}x, img per CPU-s {ratio('train_cpu_img_s'):.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(), "rows": rows},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
