"""GAN losses on D's raw logits (never Sigmoid + BCELoss: softplus is the stable form of BCE-with-logits).

    d_loss = discriminator_loss("nonsaturating", real_logits, fake_logits)   # (B,), (B,) → scalar
    g_loss = generator_loss("nonsaturating", fake_logits)

With l = D(x) a logit and σ the sigmoid: −log σ(l) = softplus(−l) and −log(1 − σ(l)) = softplus(l).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import relu, softplus

LOSSES: tuple[str, ...] = ("nonsaturating", "minimax", "hinge", "wgan", "wgan-gp", "lsgan")


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D's loss from logits on real (B,) and generated (B,) images; wgan-gp's penalty is added by the caller."""
    real, fake = real.float(), fake.float()
    if kind in ("nonsaturating", "minimax"):
        # −log D(x) − log(1 − D(G(z)))
        return softplus(-real).mean() + softplus(fake).mean()
    if kind == "hinge":
        return relu(1.0 - real).mean() + relu(1.0 + fake).mean()
    if kind in ("wgan", "wgan-gp"):
        # The critic maximises E[D(x)] − E[D(G(z))] (its Lipschitz bound: clipping for wgan, the penalty for -gp).
        return fake.mean() - real.mean()
    if kind == "lsgan":
        # Least squares with targets 1 (real) and 0 (fake), on the raw output; halved, as pytorch-CycleGAN-and-
        # pix2pix's backward_D_basic halves D's two MSE terms (Mao et al.'s ½).
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """G's loss from D's logits on generated images (B,)."""
    fake = fake.float()
    if kind == "nonsaturating":
        # G minimises −log D(G(z)): strong gradients when D rejects the samples.
        return softplus(-fake).mean()
    if kind == "minimax":
        # G minimises log(1 − D(G(z))) = −softplus(l): the original game, saturates early (for reference).
        return -softplus(fake).mean()
    if kind in ("hinge", "wgan", "wgan-gp"):
        return -fake.mean()
    if kind == "lsgan":
        # A plain MSE to target 1, as GANLoss('lsgan') in backward_G (no ½: Mao et al. write one, but it is a
        # constant that Adam ignores for a one-term G loss, while cyclegan adds this term to unhalved cycle and
        # identity terms, whose weights were tuned against the unhalved GAN term).
        return ((fake - 1.0) ** 2).mean()
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def gradient_penalty(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(‖∇D(x̂)‖₂ − 1)²] at random points x̂ between real and fake (B, C, H, W).

    Run outside autocast: the double backward in fp32 keeps the penalty from underflowing.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    mixed = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
    out = discriminator(mixed, labels) if labels is not None else discriminator(mixed)
    (grad,) = torch.autograd.grad(out.float().sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
