"""The networks: shapes, output ranges, conditional variants, spectral norm, kwargs that survive JSON."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gan_core.config import ModelConfig
from gan_core.config.catalogue import family_info
from gan_core.errors import UserError
from gan_core.models import build_discriminator, build_generator, family

DCGAN_RESOLUTIONS = family_info("dcgan").supports.resolutions

CASES = [
    # arch, resolution, channels, conditional, cond_mode, spectral_norm
    ("dcgan", 28, 1, False, "projection", False),
    ("dcgan", 32, 3, False, "projection", True),
    ("dcgan", 64, 1, True, "projection", False),
    ("dcgan", 32, 1, True, "concat", True),
    ("mlp", 28, 1, False, "projection", False),
    ("mlp", 32, 3, True, "projection", True),
    ("mlp", 32, 1, True, "concat", False),
]


@pytest.mark.parametrize(("arch", "res", "ch", "cond", "mode", "sn"), CASES)
def test_generator_and_discriminator_shapes(arch, res, ch, cond, mode, sn):
    torch.manual_seed(0)
    model = ModelConfig(arch=arch, conditional=cond, cond_mode=mode, latent_dim=16, g_width=8, d_width=8,
                        spectral_norm=sn)
    g_kwargs = family(arch).generator_kwargs(model, (ch, res, res), num_classes=10)
    d_kwargs = family(arch).discriminator_kwargs(model, "nonsaturating", (ch, res, res), num_classes=10)
    # The package stores the kwargs as JSON and rebuilds from them: they must round-trip unchanged.
    assert json.loads(json.dumps(g_kwargs)) == g_kwargs and json.loads(json.dumps(d_kwargs)) == d_kwargs
    G, D = build_generator(arch, **g_kwargs), build_discriminator(arch, **d_kwargs)
    assert G.latent_dim == 16 and G.num_classes == (10 if cond else 0)

    labels = torch.tensor([0, 3, 9, 9]) if cond else None
    images = G(torch.randn(4, 16), labels)
    assert images.shape == (4, ch, res, res)
    assert images.min() >= -1 and images.max() <= 1  # Tanh output
    logits = D(images, labels)
    assert logits.shape == (4,)
    # Logits, not probabilities: D has no sigmoid, so it also serves as the WGAN critic.
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())
    has_sn = any("parametrizations" in name for name, _ in D.named_parameters())
    assert has_sn == sn


def test_conditional_output_depends_on_label():
    torch.manual_seed(0)
    G = build_generator("dcgan", latent_dim=16, channels=1, resolution=32, width=8, num_classes=10)
    D = build_discriminator("dcgan", channels=1, resolution=32, width=8, num_classes=10, cond_mode="projection")
    z = torch.randn(2, 16).repeat(2, 1)  # the same two latents with two different labels
    G.eval(), D.eval()
    x = G(z, torch.tensor([1, 1, 7, 7]))
    assert not torch.allclose(x[:2], x[2:])
    logits = D(x[:2].repeat(2, 1, 1, 1), torch.tensor([1, 1, 7, 7]))
    assert not torch.allclose(logits[:2], logits[2:])
    with pytest.raises(ValueError, match="conditional"):
        G(z)


def test_discriminator_normalisation_fits_the_loss():
    """BatchNorm for the BCE-style losses, none of it where a gradient penalty or spectral norm is used."""
    def norms(loss: str, sn: bool) -> set[type]:
        model = ModelConfig(arch="dcgan", d_width=8, spectral_norm=sn)
        D = build_discriminator("dcgan", **family("dcgan").discriminator_kwargs(model, loss, (1, 32, 32), 0))
        return {type(m) for m in D.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}

    assert norms("nonsaturating", False) == {nn.BatchNorm2d}
    assert norms("wgan-gp", False) == {nn.GroupNorm}
    assert norms("hinge", True) == set()


def test_dcgan_rejects_unsupported_resolution():
    with pytest.raises(UserError, match=r"20px.*" + ", ".join(str(r) for r in DCGAN_RESOLUTIONS)):
        build_generator("dcgan", latent_dim=8, channels=1, resolution=20, width=8)
    with pytest.raises(UserError, match="unknown architecture 'resnet'"):
        build_discriminator("resnet", channels=1, resolution=32, width=8)


def test_projection_discriminator_starts_with_a_class_term_no_larger_than_its_linear_term():
    # Issue 17: with nn.Embedding's N(0, 1) init the class term dwarfed the rest from step 0, D won through the
    # label path (D(x) logit +11.9, D(G(z)) -7.3) and G drew speckled texture; it now starts at the DCGAN init's scale.
    torch.manual_seed(0)
    D = build_discriminator("dcgan", channels=1, resolution=32, width=32, num_classes=10, cond_mode="projection")
    D.eval()
    x, y = torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,))
    with torch.no_grad():
        linear = D.head.linear(D.features(x).sum(dim=(2, 3))).squeeze(1)
        class_term = D(x, y) - linear
    assert class_term.abs().mean() < 2 * linear.abs().mean()
