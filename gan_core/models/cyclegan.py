"""CycleGAN (Zhu et al. 2017): unpaired translation between image domains A and B, after
pytorch-CycleGAN-and-pix2pix. The one family of the *translation* task: its input is an image, not a latent.

    G = Generator(channels=1, resolution=32, width=32, res_blocks=6)    # holds G_AB (G.a2b) and G_BA (G.b2a)
    fake_b = G(real_a, "a2b")                                           # (B, C, H, W) in [-1, 1] → same shape
    D = Discriminator(channels=1, resolution=32, width=32)              # PatchGANs D.a (judges A), D.b (judges B)
    patch_logits = D(fake_b, "b")                                       # (B, 1, h, w): one logit per patch

G_AB and G_BA are ResNet-block generators: a 7×7 conv, two stride-2 downsamplings, `res_blocks` residual
blocks, two upsamplings and a 7×7 conv to tanh, with instance norm and reflection padding. Each PatchGAN
halves the side `patch_downsamplings` times (3 at 256 px as in the paper, fewer at small sides so a patch
stays a part of the image).

TrainingStep: one G update of both directions — adversarial (train.loss, LSGAN by default: E[(D(G(x)) − 1)²] per
direction, unhalved, as backward_G) + cycle consistency λ·(‖G_BA(G_AB(a)) − a‖₁ + ‖G_AB(G_BA(b)) − b‖₁) with
λ = train.cycle_weight (10) + identity λ·λ_id·(‖G_AB(b) − b‖₁ + ‖G_BA(a) − a‖₁), λ_id = train.identity_weight
(0.5) — then one update of both discriminators (LSGAN: ½·(real + fake) each, as backward_D_basic) on real images
and on fakes drawn from a history pool of the last train.pool_size (50) translations (Shrivastava et al. 2017).
tests/test_parity.py checks both totals against the reference's formulas. Adam's learning rates decay linearly
to zero over the second half of train.steps, as the paper's schedule does over its second 100 epochs.

With train.semantic_weight = μ > 0 (the default, 1), G's loss adds a semantic-consistency term after CyCADA
(Hoffman et al. 2018): μ·(CE(j_B(G_AB(a)), argmax j_A(a)) + CE(j_A(G_BA(b)), argmax j_B(b))), where j_A, j_B are
frozen classifiers of each domain's classes (the `classifier` step's judges): each translation must keep the class
its source image has. Cycle and adversarial losses alone are also met by a consistent swap of two classes (digits'
9s drawn as MNIST 3s and back); this term is not. CyCADA scores G_AB(a) with the *source* classifier; here the
target domain's judge does, because a classifier rarely reads the other domain's style (on the digits ↔ MNIST demo
j_A reads MNIST digits at 31%, and the source-scored term left content at 0.69/0.51). The judges are not
evaluation's classifiers (their own seed), so content_lenet_* stays an independent check.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gan_core.config import ModelConfig
from gan_core.config.catalogue import family_info
from gan_core.errors import UserError
from gan_core.models.losses import discriminator_loss, generator_loss
from gan_core.models.step import Loop, StepOutput

SUPPORTS = family_info("cyclegan").supports  # what it accepts: its catalogue entry
DIRECTIONS = ("a2b", "b2a")
Direction = Literal["a2b", "b2a"]
Domain = Literal["a", "b"]
MIN_RESOLUTION = SUPPORTS.min_resolution
LOSSES = SUPPORTS.losses or ()


def _check_resolution(resolution: int) -> None:
    # Two stride-2 downsamplings must divide the side; 16 px leaves a 4×4 bottleneck.
    if not SUPPORTS.resolution(resolution):
        raise UserError(f"CycleGAN needs data.resolution divisible by {SUPPORTS.resolution_step} and at least "
                        f"{MIN_RESOLUTION}, got {resolution}")


def _init(module: nn.Module) -> None:
    """The reference's init: conv weights ~ N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """One direction: (B, C, H, W) in [-1, 1] → (B, C, H, W) in [-1, 1]."""

    def __init__(self, channels: int, width: int, res_blocks: int):
        super().__init__()
        w = width
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, w, 7), nn.InstanceNorm2d(w),
                                   nn.ReLU(True)]
        for mult in (1, 2):  # (B, w, H, W) → (B, 4w, H/4, W/4)
            layers += [nn.Conv2d(w * mult, w * mult * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(w * mult * 2),
                       nn.ReLU(True)]
        layers += [ResidualBlock(4 * w) for _ in range(res_blocks)]
        for mult in (4, 2):  # back to (B, w, H, W)
            layers += [nn.ConvTranspose2d(w * mult, w * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(w * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Generator(nn.Module):
    """Both directions: `G(x, "a2b")` is G_AB, `G(x, "b2a")` is G_BA. One module, so the loop's optimizer, EMA,
    checkpoints and DDP treat the pair as it treats any family's G."""

    def __init__(self, channels: int, resolution: int, width: int, res_blocks: int = 6):
        super().__init__()
        _check_resolution(resolution)
        if not 1 <= res_blocks <= 32:
            raise UserError(f"model.res_blocks={res_blocks}: expected 1 to 32 residual blocks")
        self.channels, self.resolution = channels, resolution
        self.a2b = ResnetGenerator(channels, width, res_blocks)
        self.b2a = ResnetGenerator(channels, width, res_blocks)
        _init(self)

    def forward(self, x: torch.Tensor, direction: Direction = "a2b") -> torch.Tensor:
        return self.direction(direction)(x)

    def direction(self, direction: str) -> ResnetGenerator:
        if direction not in DIRECTIONS:
            raise UserError(f"direction={direction!r}: expected a2b or b2a")
        return self.a2b if direction == "a2b" else self.b2a


def patch_downsamplings(resolution: int) -> int:
    """Stride-2 convolutions of each PatchGAN: 3 at 256 px (the paper's 70×70 patches), 1 at 16–31 px."""
    return max(1, min(3, int(math.log2(resolution)) - 4))


class PatchDiscriminator(nn.Module):
    """(B, C, H, W) → (B, 1, h, w) logits, one per overlapping patch (LSGAN scores them with no sigmoid)."""

    def __init__(self, channels: int, width: int, downsamplings: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = width
        for i in range(1, downsamplings + 1):
            out = width * min(2 ** i, 8)
            stride = 2 if i < downsamplings else 1  # the last block keeps the side, as in the reference
            layers += [nn.Conv2d(ch, out, 4, stride=stride, padding=1), nn.InstanceNorm2d(out),
                       nn.LeakyReLU(0.2, True)]
            ch = out
        layers += [nn.Conv2d(ch, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Discriminator(nn.Module):
    """`D(x, "a")` judges domain A images, `D(x, "b")` domain B's."""

    def __init__(self, channels: int, resolution: int, width: int):
        super().__init__()
        _check_resolution(resolution)
        layers = patch_downsamplings(resolution)
        self.a = PatchDiscriminator(channels, width, layers)
        self.b = PatchDiscriminator(channels, width, layers)
        _init(self)

    def forward(self, x: torch.Tensor, domain: Domain = "b") -> torch.Tensor:
        return self.a(x) if domain == "a" else self.b(x)


def generator_options(model: ModelConfig) -> dict[str, Any]:
    return {"res_blocks": model.res_blocks}


def discriminator_options(model: ModelConfig, loss: str) -> dict[str, Any]:
    if model.spectral_norm:
        raise UserError("model.spectral_norm=true: cyclegan's PatchGANs use instance norm, not spectral norm; "
                        "set model.spectral_norm=false")
    if loss not in LOSSES:
        raise UserError(f"train.loss={loss!r}: cyclegan trains with {', '.join(LOSSES)} (lsgan is the paper's)")
    return {}


class HistoryPool:
    """The last `size` translations D has seen (Shrivastava et al. 2017): D is shown, per image, the new fake or
    (half the time, once full) an older one it replaces, so it does not forget what G produced before."""

    def __init__(self, size: int):
        self.size = size
        self.images: torch.Tensor | None = None  # (size, C, H, W), filled up to self.count
        self.count = 0

    def query(self, fakes: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return fakes
        fakes = fakes.detach()
        if self.images is None:
            self.images = torch.zeros(self.size, *fakes.shape[1:], device=fakes.device, dtype=fakes.dtype)
        out = fakes.clone()
        # One draw per image, taken whether or not it is used: the noise stream does not depend on the pool's fill.
        swap = torch.rand(len(fakes), generator=noise, device=noise.device) < 0.5
        slot = torch.randint(self.size, (len(fakes),), generator=noise, device=noise.device)
        for i in range(len(fakes)):
            if self.count < self.size:
                self.images[self.count] = fakes[i]
                self.count += 1
            elif swap[i]:
                j = int(slot[i])
                out[i] = self.images[j]
                self.images[j] = fakes[i]
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.images is None else {"images": self.images[: self.count].clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor], like: torch.Tensor) -> None:
        stored = state.get("images")
        self.count = 0 if stored is None else len(stored)
        self.images = None
        if stored is not None:
            self.images = torch.zeros(self.size, *stored.shape[1:], device=like.device, dtype=stored.dtype)
            self.images[: self.count] = stored.to(like.device)


def lr_scale(step: int, steps: int) -> float:
    """1 over the first half of training, then linearly down to 1/(half + 1) at the last step (the paper's
    `1 − max(0, epoch − n_epochs) / (n_epochs_decay + 1)`, in steps)."""
    half = steps // 2
    return 1.0 - max(0, step - half) / (steps - half + 1)


def semantic_loss(source_judge: nn.Module, target_judge: nn.Module, source: torch.Tensor,
                  translated: torch.Tensor) -> torch.Tensor:
    """One direction's semantic consistency: CE of the target domain's judge on the translations (B, C, H, W)
    against the labels the source domain's judge gives their source images (B, C, H, W). Gradients reach only
    `translated`."""
    with torch.no_grad():
        labels = source_judge.classify(source).argmax(1)  # (B,)
    return F.cross_entropy(target_judge.classify(translated).float(), labels)


class TrainingStep:
    """One step: G_AB and G_BA together (adversarial + cycle + identity + semantic), then D_A and D_B on pooled
    fakes."""

    def __init__(self, loop: Loop):
        self.loop, self.tc = loop, loop.cfg.train
        self.pools = {"a": HistoryPool(self.tc.pool_size), "b": HistoryPool(self.tc.pool_size)}
        # Each domain's judge (frozen): labels its own images, and scores the translations into it.
        self.judges: dict[str, nn.Module] = {}
        if self.tc.semantic_weight > 0:
            self.judges = {d: loop.judge(d) for d in ("a", "b")}
        zero = torch.zeros((), device=loop.device)
        self._cycle, self._identity, self._adv, self._semantic, self._scale = zero, zero, zero, zero, 1.0

    def _set_lr(self, step: int) -> None:
        self._scale = lr_scale(step, self.tc.steps)
        self.loop.scale_learning_rates(self._scale)

    def __call__(self, step: int) -> StepOutput:
        loop, tc = self.loop, self.tc
        self._set_lr(step)
        real_a, _ = loop.real_batch(step - 1, domain="a")
        real_b, _ = loop.real_batch(step - 1, domain="b")
        G, D = loop.G_step, loop.D_step

        # ---- G: both directions, D frozen.
        loop.D.requires_grad_(False)
        with loop.runtime.autocast():
            fake_b, fake_a = G(real_a, "a2b"), G(real_b, "b2a")
            cycle = F.l1_loss(G(fake_b, "b2a").float(), real_a) + F.l1_loss(G(fake_a, "a2b").float(), real_b)
            adversarial = (generator_loss(tc.loss, D(loop.augment(fake_b), "b"))
                           + generator_loss(tc.loss, D(loop.augment(fake_a), "a")))
            g_loss = adversarial + tc.cycle_weight * cycle
            identity = torch.zeros((), device=loop.device)
            if tc.identity_weight > 0:
                # G_AB should leave a B image as it is (and G_BA an A image): keeps colour and content.
                identity = F.l1_loss(G(real_b, "a2b").float(), real_b) + F.l1_loss(G(real_a, "b2a").float(), real_a)
                g_loss = g_loss + tc.cycle_weight * tc.identity_weight * identity
            semantic = torch.zeros((), device=loop.device)
            if self.judges:
                # Each translation keeps its source image's class, as the judges of the two domains see them.
                semantic = (semantic_loss(self.judges["a"], self.judges["b"], real_a, fake_b)
                            + semantic_loss(self.judges["b"], self.judges["a"], real_b, fake_a))
                g_loss = g_loss + tc.semantic_weight * semantic
        loop.optimize(loop.G, loop.opt_g, g_loss)

        # ---- D_A and D_B: real up, pooled fakes down.
        loop.D.requires_grad_(True)
        pooled_b = self.pools["b"].query(fake_b, loop.noise)
        pooled_a = self.pools["a"].query(fake_a, loop.noise)
        with loop.runtime.autocast():
            d_real_b, d_fake_b = D(loop.augment(real_b), "b"), D(loop.augment(pooled_b), "b")
            d_real_a, d_fake_a = D(loop.augment(real_a), "a"), D(loop.augment(pooled_a), "a")
            d_loss = (discriminator_loss(tc.loss, d_real_b.flatten(), d_fake_b.flatten())
                      + discriminator_loss(tc.loss, d_real_a.flatten(), d_fake_a.flatten()))
        loop.optimize(loop.D, loop.opt_d, d_loss)
        loop.sync_buffers()

        self._cycle, self._identity, self._adv = cycle.detach(), identity.detach(), adversarial.detach()
        self._semantic = semantic.detach()
        # Per image: the mean patch logit, both domains (what the loop averages and ADA steers by).
        d_real = torch.cat([d_real_a.flatten(1).mean(1), d_real_b.flatten(1).mean(1)]).detach()
        d_fake = torch.cat([d_fake_a.flatten(1).mean(1), d_fake_b.flatten(1).mean(1)]).detach()
        loop.observe_real_logits(d_real)
        return StepOutput(d_loss.detach(), g_loss.detach(), d_real, d_fake, real_b, fake_b.detach())

    def metrics(self) -> dict[str, float]:
        semantic = {"semantic_ce": float(self._semantic)} if self.judges else {}
        return {"cycle_l1": float(self._cycle), "identity_l1": float(self._identity),
                "g_adversarial": float(self._adv), "lr_scale": self._scale, **semantic}

    def state_dict(self) -> dict[str, Any]:
        return {f"pool_{k}": pool.state_dict() for k, pool in self.pools.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        like = next(self.loop.G.parameters())
        for k, pool in self.pools.items():
            pool.load_state_dict(state.get(f"pool_{k}", {}), like)

    @torch.no_grad()
    def sample_grid(self, G: nn.Module) -> tuple[torch.Tensor, int]:
        """Rows of (a, G_AB(a), G_BA(G_AB(a)), b, G_BA(b), G_AB(G_BA(b))) for the loop's fixed real images."""
        a, b = self.loop.grid_images["a"], self.loop.grid_images["b"]
        ab, ba = G(a, "a2b"), G(b, "b2a")
        columns = [a, ab, G(ab, "b2a"), b, ba, G(ba, "a2b")]
        return torch.stack(columns, dim=1).flatten(0, 1), len(columns)  # (8·6, C, H, W), 6 per row
