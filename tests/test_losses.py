"""Losses on logits against their textbook definitions, stability at extreme logits, the gradient penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

from gan_core.models.losses import LOSSES, discriminator_loss, generator_loss, gradient_penalty

REAL = torch.tensor([2.0, -1.0, 0.5, 3.0])
FAKE = torch.tensor([-2.0, 0.0, 1.5, -0.5])


def test_bce_losses_match_bce_with_logits():
    ones, zeros = torch.ones(4), torch.zeros(4)
    expected_d = bce(REAL, ones) + bce(FAKE, zeros)
    for kind in ("nonsaturating", "minimax"):
        assert torch.allclose(discriminator_loss(kind, REAL, FAKE), expected_d)
    # Non-saturating G: −log D(G(z)); minimax G: log(1 − D(G(z))) = −BCE(fake, 0).
    assert torch.allclose(generator_loss("nonsaturating", FAKE), bce(FAKE, ones))
    assert torch.allclose(generator_loss("minimax", FAKE), -bce(FAKE, zeros))


def test_hinge_wgan_lsgan_values():
    # hinge D: mean(relu(1 − real)) + mean(relu(1 + fake))
    hinge_d = torch.tensor([0.0, 2.0, 0.5, 0.0]).mean() + torch.tensor([0.0, 1.0, 2.5, 0.5]).mean()
    assert torch.allclose(discriminator_loss("hinge", REAL, FAKE), hinge_d)
    assert torch.allclose(generator_loss("hinge", FAKE), -FAKE.mean())
    assert torch.allclose(discriminator_loss("wgan-gp", REAL, FAKE), FAKE.mean() - REAL.mean())
    assert torch.allclose(generator_loss("wgan-gp", FAKE), -FAKE.mean())
    lsgan_d = 0.5 * ((REAL - 1) ** 2).mean() + 0.5 * (FAKE**2).mean()
    assert torch.allclose(discriminator_loss("lsgan", REAL, FAKE), lsgan_d)
    # G: a plain MSE to 1, as pytorch-CycleGAN-and-pix2pix's GANLoss (the ½ is D's only; tests/test_parity.py).
    assert torch.allclose(generator_loss("lsgan", FAKE), ((FAKE - 1) ** 2).mean())


@pytest.mark.parametrize("kind", LOSSES)
def test_losses_finite_with_gradients_at_extreme_logits(kind):
    """Sigmoid + BCELoss would give log(0) = −inf here; the logit forms stay finite."""
    real = torch.tensor([-1e4, 1e4], requires_grad=True)
    fake = torch.tensor([1e4, -1e4], requires_grad=True)
    total = discriminator_loss(kind, real, fake) + generator_loss(kind, fake)
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()


def test_generator_loss_pushes_fake_logits_up():
    """Every G loss falls as D scores the fakes as more real."""
    for kind in LOSSES:
        assert generator_loss(kind, torch.full((4,), 2.0)) < generator_loss(kind, torch.full((4,), -2.0)), kind


def test_gradient_penalty_of_linear_critic():
    """D(x) = w·x has gradient w everywhere, so the penalty is exactly (‖w‖ − 1)²."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 1, bias=False))
    with torch.no_grad():
        critic[1].weight.copy_(torch.arange(12.0).view(1, 12) / 10)
    w_norm = critic[1].weight.norm()
    real, fake = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    assert torch.allclose(gp, (w_norm - 1) ** 2, atol=1e-5)
    gp.backward()  # the penalty must train the critic (double backward)
    assert critic[1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="unknown loss 'wasserstein'"):
        discriminator_loss("wasserstein", REAL, FAKE)
