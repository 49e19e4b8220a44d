"""Parity with the reference implementations: each loss, penalty and heuristic computed by ganops' code and by a
few-line transcription of the reference formula, on the same tensors (the same networks, batches and random draws).
A change that drifts from the references fails here.

References (transcribed, not imported): NVlabs/stylegan2-ada-pytorch training/loss.py (logistic losses, R1,
path length) and training_loop.py (the ADA heuristic); junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py
`GANLoss` and models/cycle_gan_model.py `backward_G` / `backward_D_basic`; igul222/improved_wgan_training
gan_mnist.py (wgan, wgan-gp); Miyato et al. 2018 (hinge); Goodfellow et al. 2014 (minimax);
mit-han-lab/data-efficient-gans DiffAugment_pytorch.py (the operations ADA applies).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from translation import TRANSLATION_SETTINGS

from gan_core.config import Config, load_config
from gan_core.models.losses import LOSSES, discriminator_loss, generator_loss, gradient_penalty
from gan_core.training.augment import _AUGMENTS, AdaptiveAugment
from gan_core.training.ema import EMA
from gan_core.training.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _close(ours: torch.Tensor, reference: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    return torch.allclose(ours.detach().float(), reference.detach().float(), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- the losses of every train.loss
def _reference_losses(kind: str, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D loss, G loss) as each reference writes it."""
    ones, zeros = torch.ones_like(real), torch.zeros_like(fake)
    if kind in ("nonsaturating", "minimax"):
        # loss.py: loss_Dgen = softplus(gen_logits), loss_Dreal = softplus(-real_logits); Gmain softplus(-gen)
        d = F.binary_cross_entropy_with_logits(real, ones) + F.binary_cross_entropy_with_logits(fake, zeros)
        if kind == "nonsaturating":
            return d, F.softplus(-fake).mean()
        return d, torch.log1p(-torch.sigmoid(fake)).mean()  # Goodfellow et al.: G minimises log(1 − D(G(z)))
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean(), -fake.mean()
    if kind in ("wgan", "wgan-gp"):
        # gan_mnist.py: disc_cost = mean(D(fake)) − mean(D(real)); gen_cost = −mean(D(fake))
        return fake.mean() - real.mean(), -fake.mean()
    if kind == "lsgan":
        # GANLoss('lsgan') is nn.MSELoss() against target 1 / 0; backward_D_basic halves D's sum, backward_G does not.
        return 0.5 * (F.mse_loss(real, ones) + F.mse_loss(fake, zeros)), F.mse_loss(fake, ones)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", LOSSES)
def test_g_and_d_loss_of_every_train_loss_match_the_reference(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(64, generator=g) * 2, torch.randn(64, generator=g) * 2
    d_ref, g_ref = _reference_losses(kind, real, fake)
    assert _close(discriminator_loss(kind, real, fake), d_ref), kind
    assert _close(generator_loss(kind, fake), g_ref), kind


# ----------------------------------------------------------------------------- cyclegan
def test_cyclegan_losses_with_their_weights_match_backward_g_and_backward_d(pair_prepared, tiny_train_config):
    """One real cyclegan step: G's total loss is cycle_gan_model.py's backward_G (GAN terms unhalved, λ = 10 on the
    cycles, λ·λ_idt = 5 on the identities), D's is backward_D_basic's 0.5·(real + fake) per domain."""
    cfg = tiny_train_config(pair_prepared, **TRANSLATION_SETTINGS, **{"train.cycle_weight": 7.0,
                                                                      "train.identity_weight": 0.3})
    trainer = Trainer(cfg, resume=False)
    G, D = copy.deepcopy(trainer.G), copy.deepcopy(trainer.D)  # the weights the step's losses are taken at
    trainer.noise.manual_seed(trainer._step_seed(1))
    out = trainer.step_fn(1)

    real_a, _ = trainer.real_batch(0, domain="a")
    real_b, _ = trainer.real_batch(0, domain="b")
    mse, l1 = F.mse_loss, F.l1_loss
    lam, lam_idt = 7.0, 0.3
    with torch.no_grad():
        fake_b, fake_a = G(real_a, "a2b"), G(real_b, "b2a")
        pred_b, pred_a = D(fake_b, "b"), D(fake_a, "a")
        loss_g = (mse(pred_b, torch.ones_like(pred_b)) + mse(pred_a, torch.ones_like(pred_a))
                  + l1(G(fake_b, "b2a"), real_a) * lam + l1(G(fake_a, "a2b"), real_b) * lam
                  + l1(G(real_b, "a2b"), real_b) * lam * lam_idt + l1(G(real_a, "b2a"), real_a) * lam * lam_idt)
        # The pool is filling on the first step, so D sees exactly this step's fakes.
        loss_d = 0.0
        for domain, real, fake in (("b", real_b, fake_b), ("a", real_a, fake_a)):
            pr, pf = D(real, domain), D(fake, domain)
            loss_d = loss_d + 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
    assert _close(out.g_loss, loss_g), (float(out.g_loss), float(loss_g))
    assert _close(out.d_loss, loss_d), (float(out.d_loss), float(loss_d))


# ----------------------------------------------------------------------------- WGAN-GP
def _reference_gp(critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """gan_mnist.py: interpolates = real + α·(fake − real); slopes = ‖∂D/∂x̂‖₂; mean((slopes − 1)²)."""
    interpolates = (real + alpha * (fake - real)).requires_grad_(True)
    (gradients,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    slopes = gradients.flatten(1).square().sum(1).sqrt()
    return ((slopes - 1.0) ** 2).mean()


def test_gradient_penalty_matches_improved_wgan_training() -> None:
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
                                 torch.nn.Linear(64, 1), torch.nn.Flatten(0))
    real, fake = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    ours = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    # The same U(0, 1) draw; ganops weights real by α where gan_mnist.py weights fake by α (α and 1 − α share a law).
    alpha = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    reference = _reference_gp(critic, real, fake, 1 - alpha)
    assert _close(ours, reference)
    params = list(critic.parameters())
    g_ours = torch.autograd.grad(ours, params, allow_unused=True, materialize_grads=True)
    g_ref = torch.autograd.grad(reference, params, allow_unused=True, materialize_grads=True)
    assert all(_close(a, b) for a, b in zip(g_ours, g_ref, strict=True))


@pytest.mark.parametrize("policy", ["", "color,translation"])
def test_wgan_gp_critic_loss_penalises_the_images_the_critic_is_trained_on(policy, mnist_prepared, tiny_train_config):
    """With DiffAugment, the critic's loss is E[D(T(G(z)))] − E[D(T(x))]: a WGAN between the augmented
    distributions, so the penalty is taken between the augmented images it saw (the same draws)."""
    cfg = tiny_train_config(mnist_prepared, **{"train.loss": "wgan-gp", "train.diffaugment": policy})
    trainer = Trainer(cfg, resume=False)
    G, D = copy.deepcopy(trainer.G), copy.deepcopy(trainer.D)
    trainer.noise.manual_seed(trainer._step_seed(1))
    out = trainer.step_fn(1)

    noise = trainer.noise.manual_seed(trainer._step_seed(1))
    real, _ = trainer.real_batch(0)
    z = torch.randn(8, 16, generator=noise)
    seen_real, seen_fake = trainer.augment(real), trainer.augment(G(z).detach())
    alpha = torch.rand(8, 1, 1, 1, generator=noise)
    critic = D(seen_fake).mean() - D(seen_real).mean()
    reference = critic + 10.0 * _reference_gp(D, seen_real, seen_fake, 1 - alpha)
    assert _close(out.d_loss, reference), (float(out.d_loss), float(reference.detach()))


# ----------------------------------------------------------------------------- R1, lazily
def test_lazy_r1_matches_stylegan2_ada(mnist_prepared, tiny_train_config):
    """loss.py Dr1: (γ/2)·‖∂D(aug(x))/∂x‖², summed per image, mean over the batch, × gain (the interval), on the
    steps that are multiples of it; taken w.r.t. the image before augmentation."""
    gamma, every = 3.0, 4
    cfg = tiny_train_config(mnist_prepared, **{"train.r1_gamma": gamma, "train.r1_every": every,
                                               "train.diffaugment": "translation"})
    trainer = Trainer(cfg, resume=False)
    G, D = copy.deepcopy(trainer.G), copy.deepcopy(trainer.D)
    losses = {}
    for step in (every - 1, every):  # without R1, then with it (D trained between them on the trainer's copy)
        trainer.noise.manual_seed(trainer._step_seed(step))
        losses[step] = trainer.step_fn(step).d_loss
        trainer.D.load_state_dict(D.state_dict())
        trainer.G.load_state_dict(G.state_dict())

    for step in (every - 1, every):
        noise = trainer.noise.manual_seed(trainer._step_seed(step))
        real, _ = trainer.real_batch(step - 1)
        z = torch.randn(8, 16, generator=noise)
        seen_real, seen_fake = trainer.augment(real), trainer.augment(G(z).detach())
        reference = F.softplus(-D(seen_real)).mean() + F.softplus(D(seen_fake)).mean()
        if step % every == 0:
            real_tmp = real.detach().requires_grad_(True)
            real_logits = D(trainer.augment(real_tmp))
            (r1_grads,) = torch.autograd.grad(real_logits.sum(), real_tmp, create_graph=True)
            r1_penalty = r1_grads.square().sum([1, 2, 3])
            reference = reference + (r1_penalty * (gamma / 2)).mean() * every
        assert _close(losses[step], reference), (step, float(losses[step]), float(reference))


# ----------------------------------------------------------------------------- path length
def test_path_length_penalty_matches_stylegan2_ada_and_reaches_the_mapping(mnist_prepared, tiny_train_config):
    """loss.py Gpl: the Jacobian-vector product w.r.t. gen_ws, the mapping's output (not a detached copy), so the
    penalty's gradient trains the mapping network too; pl_mean is lerped before use, × pl_weight × gain."""
    weight, every = 2.0, 3
    cfg = tiny_train_config(mnist_prepared, **{"model.arch": "stylegan2", "model.mapping_layers": 2,
                                               "train.pl_weight": weight, "train.pl_every": every})
    trainer = Trainer(cfg, resume=False)
    step, G = trainer.step_fn, trainer.G
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    start = torch.tensor(0.3)

    def grads() -> dict[str, torch.Tensor]:
        return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in G.named_parameters()}

    G.zero_grad()
    step.pl_mean = start.clone()
    trainer.noise.manual_seed(11)
    ours = step.g_regularizer(every, z, None)
    ours.backward()
    ours_grads, ours_mean = grads(), step.pl_mean.clone()

    G.zero_grad()
    noise = trainer.noise.manual_seed(11)
    gen_ws, _ = step._ws_for(z[:4], None)  # run_G's ws: style-mixed mapping output, pl_batch_shrink = 2
    gen_img = G.synthesis(gen_ws, noise)
    pl_noise = torch.randn(gen_img.shape, generator=noise) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
    (pl_grads,) = torch.autograd.grad((gen_img * pl_noise).sum(), gen_ws, create_graph=True)
    pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
    pl_mean = start.lerp(pl_lengths.mean(), 0.01)
    reference = ((pl_lengths - pl_mean).square() * weight).mean() * every
    reference.backward()
    ref_grads = grads()

    assert _close(ours, reference)
    assert _close(ours_mean, pl_mean)
    mapping = [k for k in ref_grads if k.startswith("mapping.") and ref_grads[k].abs().sum() > 0]
    assert mapping, "the reference's penalty trains the mapping network"
    for k in ref_grads:
        assert _close(ours_grads[k], ref_grads[k], rtol=1e-4, atol=1e-7), k


# ----------------------------------------------------------------------------- ADA
def _reference_p(p: float, signs_per_rank: list[torch.Tensor], target: float, batch_gpu: int, world: int,
                 interval: int, kimg: float) -> float:
    """training_loop.py: ada_stats averages Loss/signs/real over every rank and every real image of the interval;
    adjust = sign(r_t − target)·(batch_size·ada_interval)/(ada_kimg·1000), batch_size the *global* batch."""
    r_t = torch.cat(signs_per_rank).mean().item()
    adjust = math.copysign(1.0, r_t - target) * (batch_gpu * world * interval) / (kimg * 1000) if r_t != target else 0
    return max(p + adjust, 0.0)


def test_ada_r_t_and_step_size_with_several_processes() -> None:
    """Four ranks, each observing its own logits: every rank's p moves as the reference's, by the global batch."""
    world, batch, interval, kimg, target = 4, 8, 2, 0.5, 0.6
    g = torch.Generator().manual_seed(0)
    # steps × ranks × batch logits, mostly positive on some ranks (r_t well above the target overall).
    logits = torch.randn(interval, world, batch, generator=g) + torch.tensor([2.0, 1.5, 0.5, 3.0])[None, :, None]
    cfg = Config().train.model_copy(update={"augment": "ada", "batch_size": batch, "ada_interval": interval,
                                            "ada_kimg": kimg, "ada_target": target})

    def ranks_average(rank: int):
        """What all_reduce_mean returns on `rank`: the mean over ranks of (sum of signs, count)."""
        def average(stats: torch.Tensor) -> torch.Tensor:
            others = [torch.stack([logits[:, r].sign().sum(), torch.tensor(float(logits[:, r].numel()))])
                      for r in range(world) if r != rank]
            return (stats + sum(others)) / world
        return average

    ps = []
    for rank in range(world):
        ada = AdaptiveAugment.for_training(cfg, world, torch.device("cpu"), ranks_average(rank))
        for k in range(interval):
            ada.observe(logits[k, rank])
        ps.append(ada.p.item())
    expected = _reference_p(0.0, [logits[:, r].flatten().sign() for r in range(world)], target, batch, world,
                            interval, kimg)
    assert expected > 0 and ps == pytest.approx([expected] * world)


def test_ada_counts_every_critic_batch_and_every_process(mnist_prepared, tiny_train_config, monkeypatch):
    """A real trainer under a 4-rank process group (torch's in-process fake backend, no other processes) with
    n_critic = 3: ADA reads D's logits on all three real batches and moves p by the global batch of all of them."""
    fake_pg = pytest.importorskip("torch.testing._internal.distributed.fake_pg")
    import torch.distributed as dist

    world, n_critic, batch, kimg = 4, 3, 8, 0.5
    cfg = tiny_train_config(mnist_prepared, **{"train.augment": "ada", "train.n_critic": n_critic,
                                               "train.ada_interval": 1, "train.ada_kimg": kimg})
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    dist.init_process_group("fake", store=fake_pg.FakeStore(), rank=0, world_size=world)
    try:
        trainer = Trainer(cfg, resume=False)
        assert trainer.dist.world_size == world
        calls: list[torch.Tensor] = []
        d_step = trainer.D_step
        trainer.D_step = lambda x, labels=None: calls.append(d_step(x, labels)) or calls[-1]
        seen: list[torch.Tensor] = []
        observe = trainer.ada.observe
        trainer.ada.observe = lambda logits: seen.append(logits) or observe(logits)
        trainer.train_step(1)
    finally:
        dist.destroy_process_group()
    # D's calls: (real, fake) per critic update, then the G step's fake.
    real_logits = torch.cat([calls[2 * i] for i in range(n_critic)]).detach()
    assert len(calls) == 2 * n_critic + 1 and torch.equal(torch.cat(seen), real_logits)
    # The fake backend's all-reduce leaves rank 0's sums: as if every rank saw these signs.
    expected = _reference_p(0.0, [real_logits.sign()] * world, cfg.train.ada_target, batch * n_critic, world, 1,
                            kimg)
    assert trainer.ada.p.item() == pytest.approx(min(expected, 1.0))


def test_ada_applies_each_operation_with_probability_p() -> None:
    """augment.py draws `rand(batch) < prob · p` per operation and image, independently; ganops' operations are
    DiffAugment's five (brightness, saturation, contrast, translation, cutout)."""
    ada = AdaptiveAugment("color,translation,cutout", target=0.6, batch_size=8, interval=4, kimg=1.0,
                          device=torch.device("cpu"))
    ada.p = torch.tensor(0.5)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ours = ada(x, torch.Generator().manual_seed(7))

    g, ref = torch.Generator().manual_seed(7), x
    ops = [op for name in ("color", "translation", "cutout") for op in _AUGMENTS[name]]
    for op in ops:
        augmented = op(ref, g)
        chosen = torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.5
        ref = torch.where(chosen, augmented, ref)
    assert torch.equal(ours, ref)


# ----------------------------------------------------------------------------- refusals where no reference answers
@pytest.mark.parametrize("loss", ["lsgan", "wgan", "wgan-gp"])
def test_ada_is_refused_with_losses_whose_d_output_is_not_centred_on_zero(loss: str) -> None:
    with pytest.raises(ValidationError, match=f"train.augment=ada.*train.loss={loss}"):
        Config.model_validate({"train": {"augment": "ada", "loss": loss}})


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax", "hinge"])
def test_ada_is_accepted_with_zero_centred_losses(loss: str) -> None:
    assert Config.model_validate({"train": {"augment": "ada", "loss": loss}}).train.augment == "ada"


def test_translation_demo_with_ada_is_refused_in_one_line() -> None:
    from pathlib import Path

    from gan_core.errors import UserError

    demo = Path(__file__).resolve().parents[1] / "configs" / "cyclegan-digits.yaml"
    assert load_config(demo).train.augment == "none"
    with pytest.raises(UserError, match="train.augment=ada") as info:
        load_config(demo, {"train.augment": "ada"})
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the EMA's ramp, as documented
def test_ema_decay_ramp_is_as_documented() -> None:
    """schema.py's ema_decay note: min(decay, (1 + n)/(10 + n)) is 0.9955 after 2,000 updates; 0.999 from ~9,000."""
    ema = EMA(torch.nn.Linear(1, 1), 0.999)
    ema.num_updates = 2000
    assert ema.current_decay() == pytest.approx(0.9955, abs=5e-5)
    ema.num_updates = 8990
    assert ema.current_decay() == pytest.approx(0.999, abs=1e-7)
