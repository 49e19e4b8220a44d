"""The GPU row of benchmarks/README.md (data at a team's scale): training img/s at 64 px RGB against a
pytorch/examples-style reference, the shard loader's img/s, and evaluation throughput at 10k samples.
Started by benchmarks/gpu.sh (≤ 8 minutes on one H100):

    benchmarks/gpu.sh                 # on a CUDA machine: 20k images, 300 steps per side, 10k evaluation samples
    benchmarks/gpu.sh --smoke         # seconds on a CPU: proves the script runs; its numbers mean nothing

1. A folder of 20,000 synthetic 96x96 RGB PNGs in 10 classes (benchmarks/data_scale.py's generator, all cores),
   prepared at 64 px RGB (timed: the prepare's img/s).
2. Training, both sides the same DCGAN (gan_core.models, 64x64x3, width 64, latent 100, batch 64: pytorch/examples'
   dcgan defaults), bf16 autocast, channels_last and torch.compile on both:
     reference  a pytorch/examples-style loop (Sigmoid + BCELoss, DataLoader over the uint8 images in pinned host
                memory, `.item()` per step)
     ours       gan_core.training.loop.Trainer.run() (train.precision=bf16, channels_last, compile): the set on the
                GPU (gan_core.data.feed.ResidentImages), then streamed from the shards through pinned memory with
                prefetch (StreamedImages, forced)
   Each after a warm-up run (compilation not timed); ratio = ours / reference.
3. The shard loader alone: random batches of 256 read from the shards and copied to the GPU (StreamedImages with
   prefetch), images/s.
4. Evaluation: `evaluate()` with the lenet extractor at 10,000 samples (classifier trained first, 1 epoch): the first
   run (real pass over the 20k images) and the second (real features cached), samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_scale import CLASSES, _write_pool_part  # noqa: E402
from gan_core.config import load_config  # noqa: E402
from gan_core.data import load_prepared, prepare  # noqa: E402
from gan_core.models import build_discriminator, build_generator  # noqa: E402

BATCH, WIDTH, LATENT, RES = 64, 64, 100, 64


def reference(images: torch.Tensor, steps: int, device: torch.device, compile: bool) -> float:
    """pytorch/examples dcgan's loop on our DCGAN with bf16 autocast, channels_last and torch.compile; img/s."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    netG = build_generator("dcgan", latent_dim=LATENT, channels=3, resolution=RES, width=WIDTH)
    netG = netG.to(device, memory_format=fmt)
    netD = nn.Sequential(build_discriminator("dcgan", channels=3, resolution=RES, width=WIDTH), nn.Sigmoid())
    netD = netD.to(device, memory_format=fmt)
    G, D = (torch.compile(netG), torch.compile(netD)) if compile else (netG, netD)
    criterion = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=BATCH, shuffle=True,
                                         drop_last=True, pin_memory=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def batches():
        while True:
            yield from loader

    it, start = batches(), time.perf_counter()
    for _ in range(steps):
        (real_u8,) = next(it)
        real = real_u8.to(device, non_blocking=True).float().div_(127.5).sub_(1).contiguous(memory_format=fmt)
        with autocast:
            netD.zero_grad()
            out = D(real).view(-1).float()
            err_real = criterion(out, torch.ones_like(out))
            fake = G(torch.randn(BATCH, LATENT, device=device))
            out_fake = D(fake.detach()).view(-1).float()
            err_fake = criterion(out_fake, torch.zeros_like(out_fake))
        (err_real + err_fake).backward()
        optD.step()
        _ = out.mean().item()  # the example prints D(x) every step
        with autocast:
            netG.zero_grad()
            out = D(fake).view(-1).float()
            err_g = criterion(out, torch.ones_like(out))
        err_g.backward()
        optG.step()
        _ = err_g.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def ours(params: Path, prepared: Path, out: Path, steps: int, device: str, compile: bool) -> float:
    from gan_core.training.loop import Trainer

    cfg = load_config(params, {
        "data.prepared_dir": str(prepared), "model.arch": "dcgan", "model.latent_dim": LATENT,
        "model.g_width": WIDTH, "model.d_width": WIDTH, "train.batch_size": BATCH, "train.steps": steps,
        "train.log_every": 100, "train.sample_every": 10**6, "train.checkpoint_every": 10**6, "train.device": device,
        "train.precision": "bf16" if device == "cuda" else "fp32", "train.channels_last": True,
        "train.compile": compile, "train.out_dir": str(out),
    })
    return Trainer(cfg, resume=False).run().images_per_s


def loader_rate(prepared: Path, device: torch.device, batches: int, batch: int = 256) -> float:
    from gan_core.data.feed import StreamedImages

    feed = StreamedImages(load_prepared(prepared), device)
    gen = torch.Generator().manual_seed(0)
    order = [torch.randint(0, len(feed), (batch,), generator=gen) for _ in range(batches + 1)]
    start = time.perf_counter()
    for k in range(batches):
        x = feed.take(order[k])
        feed.prefetch(order[k + 1])
        x.float().sum()  # touch it on the device
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script runs")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if args.smoke:
        args.images, args.steps, args.samples = 200, 4, 200
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    compile = cuda
    report: dict[str, object] = {"device": torch.cuda.get_device_name() if cuda else "cpu",
                                 "torch": torch.__version__, "images": args.images, "steps": args.steps}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = Path(tmp)
        (root / "params.yaml").write_text("{}\n")
        folder = root / "images"
        for label in range(CLASSES):
            (folder / f"class{label}").mkdir(parents=True)
        per_class = args.images // CLASSES
        t = time.perf_counter()
        jobs = [(folder, label, i, min(i + 250, per_class))
                for label in range(CLASSES) for i in range(0, per_class, 250)]
        with ProcessPoolExecutor(os.cpu_count()) as ex:
            list(ex.map(_write_pool_part, jobs))
        report["generate_s"] = round(time.perf_counter() - t, 1)
        prepared = root / "prepared"
        t = time.perf_counter()
        cfg = load_config(root / "params.yaml", {"data.source": f"folder:{folder}", "data.resolution": RES,
                                                 "data.channels": 3, "data.prepared_dir": str(prepared)})
        prepare(cfg.data)
        report["prepare_img_s"] = round(args.images / (time.perf_counter() - t), 1)
        images = load_prepared(prepared).images  # uint8 (N, 3, 64, 64) for the reference's DataLoader

        reference(images, 3, device, compile)  # warm-up: compilation
        report["reference_img_s"] = round(reference(images, args.steps, device, compile), 1)
        ours(root / "params.yaml", prepared, root / "warm", 3, device.type, compile)
        report["ours_img_s"] = round(ours(root / "params.yaml", prepared, root / "run", args.steps, device.type,
                                          compile), 1)
        report["ratio"] = round(report["ours_img_s"] / report["reference_img_s"], 3)
        import gan_core.data.feed as feed

        feed.ON_DEVICE_BYTES, feed.IN_MEMORY_BYTES = 0, 0  # force the streamed path
        report["ours_streamed_img_s"] = round(ours(root / "params.yaml", prepared, root / "streamed", args.steps,
                                                   device.type, compile), 1)
        report["loader_img_s"] = round(loader_rate(prepared, device, 20 if args.smoke else 400), 1)

        from gan_core.evaluation.classifier import train_classifier
        from gan_core.evaluation.evaluate import evaluate

        ecfg = load_config(root / "params.yaml", {
            "data.prepared_dir": str(prepared), "model.latent_dim": LATENT, "model.g_width": WIDTH,
            "model.d_width": WIDTH, "train.out_dir": str(root / "run"), "eval.num_samples": args.samples,
            "eval.batch_size": 500 if cuda else 100, "eval.device": device.type, "eval.classifier.epochs": 1,
            "eval.classifier.min_accuracy": 0.0, "eval.classifier.out_dir": str(root / "classifier"),
            "eval.cache_dir": str(root / "cache"), "eval.out_dir": str(root / "eval")})
        train_classifier(ecfg)
        for key in ("eval_first_samples_s", "eval_cached_samples_s"):
            t = time.perf_counter()
            evaluate(ecfg)
            report[key] = round(args.samples / (time.perf_counter() - t), 1)
    print(json.dumps(report, indent=2))
    print(f"\nratio ours/reference {report['ratio']:.2f}x ({report['device']})")
    print(f"\n| {report['device']} | {report['reference_img_s']} | {report['ours_img_s']} ({report['ratio']}x) "
          f"| {report['ours_streamed_img_s']} | {report['loader_img_s']} | {report['eval_first_samples_s']} / "
          f"{report['eval_cached_samples_s']} |")


if __name__ == "__main__":
    main()
