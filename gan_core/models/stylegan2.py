"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"), compact, for 16–256 px.

    G = Generator(latent_dim=64, channels=1, resolution=32, width=32, mapping_layers=4)
    images = G(z)                        # (B, 1, 32, 32) in [-1, 1]
    images = G(z, truncation_psi=0.7)    # the truncation trick: w pulled towards the tracked average w

G: a mapping network z → w (equalised-lr MLP, lr ×0.01, the label's embedding concatenated to z when conditional),
a learned 4×4 constant, per resolution two 3×3 modulated convolutions with weight demodulation (the first
upsamples ×2), per-layer noise with a learned strength, and skip-architecture toRGB outputs summed over
resolutions. G tracks the average w during training (`w_avg`), which the truncation trick and `psi=0` use.
In train() mode the layer noise is random (from the generator passed by the training step); in eval() mode it
is a fixed buffer, so a seed always gives the same image (the EMA copy, exports and serving are in eval mode).
Evaluation therefore measures FID with the noise frozen, where stylegan2-ada's metrics (metric_utils.py) draw it
anew per image (noise_mode='random'): the images vary a little less (the noise only moves fine detail), so
fid_* here is comparable between ganops runs, not to the paper's or other published StyleGAN2 FIDs (which differ
in data, resolution and feature extractor anyway).

D: residual blocks (two 3×3 convs and a 1×1 skip, each ×0.5 down, summed ×1/√2), minibatch standard deviation
before the 4×4 head, and a projection head when conditional.

TrainingStep: the non-saturating logistic loss (train.loss) with lazy R1 (γ = train.r1_gamma, default 0.1,
every train.r1_every = 16 steps), style mixing (train.style_mixing = 0.9) and the optional path-length
regulariser (train.pl_weight, every train.pl_every steps). Written after the paper and NVlabs/stylegan2-ada-pytorch
(networks.py, loss.py); not a copy of either (no custom CUDA ops: upsampling is bilinear, downsampling average
pooling, so it runs anywhere torch does).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gan_core.config import ModelConfig
from gan_core.config.catalogue import family_info
from gan_core.errors import UserError
from gan_core.models.step import AdversarialStep, Loop

RESOLUTIONS = family_info("stylegan2").supports.resolutions or ()
W_AVG_BETA = 0.995  # w_avg ← lerp(batch mean w, w_avg, β) each G step, as in stylegan2-ada
PL_DECAY = 0.01  # the path-length target follows the mean length with this rate
SQRT2 = math.sqrt(2.0)


def channels_at(side: int, resolution: int, width: int) -> int:
    """Feature maps at `side`: `width` at full resolution, doubling per halving, at most 8 × width."""
    return min(width * (resolution // side), 8 * width)


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        allowed = ", ".join(str(r) for r in RESOLUTIONS)
        raise UserError(f"StyleGAN2 cannot make {resolution}px images; data.resolution must be one of {allowed}")


# ----------------------------------------------------------------------------- equalised learning rate
class EqualLinear(nn.Module):
    """Linear layer with weights ~ N(0, 1) scaled at run time by lr_mul/√fan_in: every weight learns at the same
    pace under Adam (equalised learning rate)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.weight_gain, self.bias_gain = lr_mul / math.sqrt(in_dim), lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate (D's layers and the skip paths)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.gain = 1 / math.sqrt(in_ch * kernel * kernel)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


# ----------------------------------------------------------------------------- generator
class MappingNetwork(nn.Module):
    """z (B, Z) [+ label] → w (B, W): normalised inputs, `layers` equalised-lr layers at lr ×0.01."""

    def __init__(self, latent_dim: int, layers: int, num_classes: int):
        super().__init__()
        self.embed = EqualLinear(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        self.net = nn.Sequential(*[
            EqualLinear(in_dim if i == 0 else latent_dim, latent_dim, lr_mul=0.01, activation=True)
            for i in range(layers)
        ])
        self.register_buffer("w_avg", torch.zeros(latent_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None, truncation_psi: float = 1.0) -> torch.Tensor:
        x = _normalize_2nd_moment(z)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels (B,) with the latents")
            y = self.embed(F.one_hot(labels, self.embed.weight.shape[1]).to(z.dtype))
            x = torch.cat([x, _normalize_2nd_moment(y)], dim=1)
        w = self.net(x)
        if truncation_psi != 1.0:
            w = self.w_avg.lerp(w, truncation_psi)  # psi = 0: every z gives the average w
        return w

    @torch.no_grad()
    def track(self, w: torch.Tensor) -> None:
        """Move w_avg towards the batch's mean w (training only)."""
        self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, W_AVG_BETA))


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class ModulatedConv2d(nn.Module):
    """The StyleGAN2 convolution: the style s = A(w) scales the weights per input channel (modulation), and the
    result is rescaled to unit output variance per output channel (demodulation), replacing AdaIN."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True,
                 upsample: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)  # styles start at 1: the plain conv
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.gain = 1 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate, self.upsample = demodulate, upsample

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.gain  # (out, in, k, k)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        # Modulating the input instead of the weights is the same product (stylegan2's non-fused path): one
        # shared convolution for the batch, much faster than a grouped one per sample on CPUs.
        y = F.conv2d(x * styles[:, :, None, None].to(x.dtype), weight.to(x.dtype), padding=weight.shape[-1] // 2)
        if self.demodulate:
            # 1/‖s ⊙ W_o‖ per sample and output channel, from Σ_i s_i² Σ_k W_oik²: no (B, out, in, k, k) tensor.
            # In fp32 even under bf16 autocast: a sum of squares then rsqrt loses too much in 8 mantissa bits.
            with torch.autocast(x.device.type, enabled=False):
                coefs = (styles.float().square() @ weight.float().square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()
            y = y * coefs[:, :, None, None].to(y.dtype)
        return y


class StyleLayer(nn.Module):
    """Modulated conv → noise × learned strength → bias → leaky ReLU (×√2 keeps unit variance)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, side: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, upsample=upsample)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # Fixed noise for eval mode: a seed gives the same image every time (the training noise is random).
        fixed = torch.Generator().manual_seed(side)
        self.register_buffer("noise_const", torch.randn(1, 1, side, side, generator=fixed))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_rng: torch.Generator | None) -> torch.Tensor:
        x = self.conv(x, w)
        if self.training:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype, generator=noise_rng)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * SQRT2


class ToRGB(nn.Module):
    """1×1 modulated conv without demodulation: this resolution's contribution to the image (skip architecture)."""

    def __init__(self, in_ch: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class Synthesis(nn.Module):
    """ws (B, num_ws, W) → image (B, C, R, R): the 4×4 constant grown by ×2 blocks; toRGB outputs summed."""

    def __init__(self, w_dim: int, channels: int, resolution: int, width: int):
        super().__init__()
        ch4 = channels_at(4, resolution, width)
        self.const = nn.Parameter(torch.randn(ch4, 4, 4))
        self.layers = nn.ModuleList([StyleLayer(ch4, ch4, w_dim, 4)])
        self.to_rgb = nn.ModuleList([ToRGB(ch4, channels, w_dim)])
        side, ch = 4, ch4
        while side < resolution:
            side *= 2
            out = channels_at(side, resolution, width)
            self.layers.extend([StyleLayer(ch, out, w_dim, side, upsample=True), StyleLayer(out, out, w_dim, side)])
            self.to_rgb.append(ToRGB(out, channels, w_dim))
            ch = out
        self.num_ws = len(self.layers) + 1  # one w per layer, and one for the last toRGB

    def forward(self, ws: torch.Tensor, noise_rng: torch.Generator | None = None) -> torch.Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], noise_rng)
        img = self.to_rgb[0](x, ws[:, 1])
        for i, rgb in enumerate(self.to_rgb[1:]):
            up, same = self.layers[1 + 2 * i], self.layers[2 + 2 * i]
            x = up(x, ws[:, 1 + 2 * i], noise_rng)
            x = same(x, ws[:, 2 + 2 * i], noise_rng)
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + rgb(x, ws[:, 3 + 2 * i])
        return img


class Generator(nn.Module):
    supports_truncation = True  # gan_core.packaging.generator.sample_images passes truncation_psi

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int, num_classes: int = 0,
                 mapping_layers: int = 4):
        super().__init__()
        _check_resolution(resolution)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.mapping = MappingNetwork(latent_dim, mapping_layers, num_classes)
        self.synthesis = Synthesis(latent_dim, channels, resolution, width)
        self.num_ws = self.synthesis.num_ws

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
                noise_rng: torch.Generator | None = None) -> torch.Tensor:
        w = self.mapping(z, labels, truncation_psi)  # (B, W)
        return self.synthesis(w[:, None].expand(-1, self.num_ws, -1), noise_rng)


# ----------------------------------------------------------------------------- discriminator
class ResidualBlock(nn.Module):
    """conv 3×3 → conv 3×3 → ½ down, plus a 1×1 skip → ½ down; the sum scaled by 1/√2 keeps the variance."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation=True)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(self.conv1(self.conv0(x)), 2)
        return (x + skip) / SQRT2


class Discriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int, num_classes: int = 0, group_size: int = 4,
                 **_shared: Any):
        super().__init__()
        _check_resolution(resolution)
        self.num_classes, self.group_size = num_classes, group_size
        ch = channels_at(resolution, resolution, width)
        self.from_rgb = EqualConv2d(channels, ch, 1, activation=True)
        blocks: list[nn.Module] = []
        side = resolution
        while side > 4:
            out = channels_at(side // 2, resolution, width)
            blocks.append(ResidualBlock(ch, out))
            ch, side = out, side // 2
        self.blocks = nn.Sequential(*blocks)  # (B, ch4, 4, 4)
        self.conv = EqualConv2d(ch + 1, ch, 3, activation=True)  # +1: the minibatch-stddev feature map
        self.fc = EqualLinear(ch * 16, ch, activation=True)
        self.out = EqualLinear(ch, 1)
        self.embed = EqualLinear(num_classes, ch) if num_classes else None  # projection: <embed(y), φ(x)>

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(self.from_rgb(x))
        h = self.fc(self.conv(_minibatch_stddev(h, self.group_size)).flatten(1))  # (B, ch)
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass labels (B,) with the images")
            y = self.embed(F.one_hot(labels, self.num_classes).to(h.dtype))
            logit = logit + (y * h).sum(dim=1) / math.sqrt(h.shape[1])
        return logit


def _minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one feature map: the std of each feature over a group of samples, averaged — D sees how varied the
    batch is, which discourages mode collapse. Groups are the largest divisor of B up to group_size."""
    b, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    y = x.float().reshape(g, b // g, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B/g,)
    y = y.reshape(1, b // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


# ----------------------------------------------------------------------------- the family's training step
class TrainingStep(AdversarialStep):
    """Style mixing in G's fakes, lazy R1 on D (γ default 0.1), optional path-length regularisation on G."""

    r1_gamma_default = 0.1

    def __init__(self, loop: Loop):
        super().__init__(loop)
        self.pl_mean = torch.zeros((), device=loop.device)
        self._pl = torch.zeros((), device=loop.device)
        self._ws: torch.Tensor | None = None

    def _ws_for(self, z: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ws (B, num_ws, W), w (B, W)) for latents z, mixing in a second latent's styles from a random layer on
        train.style_mixing of the batches (the paper's mixing regularisation)."""
        G, loop = self.loop.G, self.loop
        w = G.mapping(z, labels)
        ws = w[:, None].expand(-1, G.num_ws, -1)
        mix = torch.rand((), device=loop.device, generator=loop.noise) < self.tc.style_mixing
        z2 = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=loop.noise)
        cutoff = torch.randint(1, G.num_ws, (), device=loop.device, generator=loop.noise)
        w2 = G.mapping(z2, labels)[:, None].expand(-1, G.num_ws, -1)
        later = (torch.arange(G.num_ws, device=z.device) >= cutoff) & mix  # (num_ws,)
        return torch.where(later[None, :, None], w2, ws), w

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None, step: int) -> torch.Tensor:
        ws, w = self._ws_for(z, labels)
        self.loop.G.mapping.track(w)
        return self.loop.G.synthesis(ws, self.loop.noise)

    def g_regularizer(self, step: int, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Path-length regularisation: |J_wᵀ y| for random image-space y should stay constant (a smooth w → image
        map); lazy, every pl_every steps, on half the batch. As loss.py's Gpl: the Jacobian is taken w.r.t. the
        mapping's output ws itself (not a detached copy), so the penalty's gradient trains the mapping network
        too, and the target pl_mean is lerped towards this batch's mean length before use, with that lerp in the
        graph."""
        tc, loop = self.tc, self.loop
        if tc.pl_weight == 0 or step % tc.pl_every != 0:
            return None
        n = max(1, z.shape[0] // 2)
        ws, _ = self._ws_for(z[:n], labels[:n] if labels is not None else None)  # (n, num_ws, W), from the mapping
        img = loop.G.synthesis(ws, loop.noise).float()
        y = torch.randn(img.shape, device=img.device, generator=loop.noise) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()  # (n,)
        pl_mean = self.pl_mean.lerp(lengths.mean(), PL_DECAY)
        self.pl_mean = pl_mean.detach()
        penalty = (lengths - pl_mean).square().mean()
        self._pl = penalty.detach()
        return penalty * tc.pl_weight * tc.pl_every

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        if self.tc.pl_weight > 0:
            out["pl_penalty"] = float(self._pl)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"pl_mean": self.pl_mean.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "pl_mean" in state:
            self.pl_mean = state["pl_mean"].to(self.pl_mean.device)


def generator_options(model: ModelConfig) -> dict[str, Any]:
    return {"mapping_layers": model.mapping_layers}


def discriminator_options(model: ModelConfig, loss: str) -> dict[str, Any]:
    """No norm layers: equalised learning rate and the residual design need none. A conditional D projects."""
    if model.spectral_norm:
        raise UserError("model.spectral_norm=true: stylegan2's discriminator takes no spectral norm (it uses "
                        "equalised learning rate and R1); set model.spectral_norm=false")
    if model.conditional and model.cond_mode != "projection":
        raise UserError(f"model.cond_mode={model.cond_mode!r}: a conditional stylegan2 discriminator uses "
                        "projection; set model.cond_mode=projection")
    return {}
