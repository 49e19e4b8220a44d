"""Training throughput: our Trainer against a plain pytorch/examples-style DCGAN loop, same process, same nets.

    .venv/bin/python benchmarks/train_throughput.py                  # CPU or the GPU if present, 60 steps each
    .venv/bin/python benchmarks/train_throughput.py --steps 200 --rounds 3 --device cuda
    .venv/bin/python benchmarks/train_throughput.py --smoke                  # seconds: 2 steps, 1 round (tests)

Both sides train the same DCGAN (gan_core.models, 32×32, 1 channel, width 64, latent 64) on mnist5k with batch 64
and Adam(2e-4, (0.5, 0.999)). The reference follows pytorch/examples/dcgan/main.py: Sigmoid + BCELoss, a DataLoader
over the (in-memory) images, three `.item()` calls per step, fp32. Ours is
`gan_core.training.loop.Trainer.run()` end to end
(logging, EMA, final sample grid, checkpoint and package included) with bf16/channels_last on CUDA and
torch.compile when --compile is given. Rounds alternate reference and ours so machine load hits both alike;
the median images/s of each is reported with the ratio ours / reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from gan_core.config import DataConfig, load_config
from gan_core.data import load_prepared, prepare
from gan_core.models import build_discriminator, build_generator
from gan_core.training.loop import Trainer

BATCH, WIDTH, LATENT, RES = 64, 64, 64, 32


def reference_loop(images: torch.Tensor, steps: int, device: torch.device) -> float:
    """pytorch/examples dcgan's training loop on our DCGAN; returns real images per second."""
    torch.manual_seed(0)
    netG = build_generator("dcgan", latent_dim=LATENT, channels=1, resolution=RES, width=WIDTH).to(device)
    # The example's D ends in a Sigmoid and trains with BCELoss.
    netD = nn.Sequential(build_discriminator("dcgan", channels=1, resolution=RES, width=WIDTH), nn.Sigmoid()).to(device)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = torch.utils.data.TensorDataset(images.float() / 127.5 - 1)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True)
    real_label, fake_label = 1.0, 0.0

    def batches():
        while True:
            yield from loader

    it = batches()
    done = 0
    start = time.perf_counter()
    while done < steps:
        (real_cpu,) = next(it)
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real = real_cpu.to(device)
        label = torch.full((BATCH,), real_label, dtype=real.dtype, device=device)
        output = netD(real).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(BATCH, LATENT, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        optimizerD.step()
        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()
        done += 1
        del D_x, D_G_z1, D_G_z2
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def ours(prepared: Path, out_dir: Path, steps: int, device: str, compile: bool) -> float:
    """gan_core's Trainer.run() on the same setup; returns real images per second over the whole run."""
    cfg = load_config(
        Path(out_dir) / "params.yaml",
        {
            "data.prepared_dir": str(prepared), "model.arch": "dcgan", "model.latent_dim": LATENT,
            "model.g_width": WIDTH, "model.d_width": WIDTH, "train.batch_size": BATCH, "train.steps": steps,
            "train.log_every": 25, "train.sample_every": 10**6, "train.checkpoint_every": 10**6,
            "train.device": device, "train.compile": compile, "train.out_dir": str(out_dir / "run"),
        },
    )
    result = Trainer(cfg, resume=False).run()
    return result.images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile our networks (CUDA)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (2 steps, 1 round): does it run?")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.rounds = 2, 1

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "params.yaml").write_text("{}\n")
        prepared = tmp / "prepared"
        max_images = 256 if args.smoke else 2048
        prepare(DataConfig(source="mnist5k", resolution=RES, channels=1, max_images=max_images,
                           prepared_dir=str(prepared)))
        images = load_prepared(prepared).images
        from gan_core.device import pick_device

        device = pick_device(args.device)
        # Warm-up (allocator, kernels, compile) for both, not timed.
        reference_loop(images, 3, device)
        ours(prepared, tmp, 3, args.device, args.compile)
        ref_rates, our_rates = [], []
        for _ in range(args.rounds):
            ref_rates.append(reference_loop(images, args.steps, device))
            our_rates.append(ours(prepared, tmp, args.steps, args.device, args.compile))
    ref, mine = statistics.median(ref_rates), statistics.median(our_rates)
    report = {
        "device": str(device), "threads": torch.get_num_threads(), "steps": args.steps, "batch": BATCH,
        "reference_images_per_s": round(ref, 1), "ours_images_per_s": round(mine, 1), "ratio": round(mine / ref, 3),
        "reference_rounds": [round(r, 1) for r in ref_rates], "ours_rounds": [round(r, 1) for r in our_rates],
    }
    print(json.dumps(report, indent=2))
    print(f"reference {ref:.1f} img/s | ours {mine:.1f} img/s | ratio {mine / ref:.2f}x")


if __name__ == "__main__":
    main()
