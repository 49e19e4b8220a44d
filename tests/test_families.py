"""The families beyond DCGAN's step: StyleGAN2's parts (demodulation, truncation, lazy R1, style mixing), the
original WGAN's clipping, ADA, and a stylegan2 candidate through the whole pipeline to `mlflow models serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from processes import free_port, stop_process_group, wait_until_ready
from test_serve import _post

from gan_core.errors import UserError
from gan_core.models.stylegan2 import Generator, ModulatedConv2d
from gan_core.packaging.generator import load_generator, sample_images
from gan_core.training.augment import AdaptiveAugment
from gan_core.training.loop import Trainer

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- stylegan2's parts
def test_weight_demodulation_keeps_activations_at_unit_scale_at_init() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 64, 32, 32)  # unit-variance input
    w = torch.randn(16, 32)
    for scale in (0.1, 1.0, 10.0):  # whatever the style's magnitude, demodulation renormalises
        conv = ModulatedConv2d(64, 64, 3, w_dim=32)
        with torch.no_grad():
            conv.affine.bias.mul_(scale)
            std = conv(x, w).std().item()
        assert 0.85 < std < 1.15, (scale, std)
    plain = ModulatedConv2d(64, 64, 3, w_dim=32, demodulate=False)
    with torch.no_grad():
        plain.affine.bias.mul_(10.0)
        assert plain(x, w).std().item() > 5  # without it, the style's scale passes straight through


def test_truncation_psi_zero_gives_the_average_image_and_one_changes_nothing() -> None:
    torch.manual_seed(0)
    G = Generator(latent_dim=16, channels=1, resolution=16, width=8, mapping_layers=2).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(16))  # as if tracked during training
    images = sample_images(G, 6, seed=3, truncation_psi=0.0)
    assert all(torch.equal(images[0], img) for img in images[1:])  # every z gives the same image
    w_avg_image = sample_images(G, 1, seed=99, truncation_psi=0.0)[0]
    assert torch.equal(images[0], w_avg_image)  # ... the image of w_avg, whatever the seed
    assert torch.equal(sample_images(G, 6, seed=3, truncation_psi=1.0), sample_images(G, 6, seed=3))
    half = sample_images(G, 6, seed=3, truncation_psi=0.5)
    assert not torch.equal(half, sample_images(G, 6, seed=3))


def test_truncation_is_refused_for_generators_without_a_w_space(generator_package: Path) -> None:
    dcgan = load_generator(generator_package)
    with pytest.raises(UserError, match=r"truncation_psi=0.7: this generator \(dcgan\) has no w space"):
        sample_images(dcgan, 2, truncation_psi=0.7)
    with pytest.raises(UserError, match=r"truncation_psi=1.5: expected a number in \[0, 1\]"):
        sample_images(dcgan, 2, truncation_psi=1.5)


def _stylegan2_trainer(prepared: Path, tiny_train_config, **overrides: object) -> Trainer:
    cfg = tiny_train_config(prepared, **{"model.arch": "stylegan2", "model.mapping_layers": 2, **overrides})
    return Trainer(cfg, resume=False)


def test_lazy_r1_runs_every_r1_every_steps_and_w_avg_is_tracked(mnist_prepared, tiny_train_config) -> None:
    trainer = _stylegan2_trainer(mnist_prepared, tiny_train_config, **{"train.r1_every": 2})
    step = trainer.step_fn
    assert step.r1_gamma == 0.1  # the family's default when train.r1_gamma is null
    real, labels = trainer.real_batch(0)
    fake = trainer.G(torch.randn(8, 16))
    assert step.d_regularizer(1, real, fake, labels, (real, fake)) is None  # odd steps: no R1
    penalty = step.d_regularizer(2, real, fake, labels, (real, fake))
    assert penalty is not None and penalty.requires_grad and penalty.item() > 0
    w_avg = trainer.G.mapping.w_avg.clone()
    trainer.train_step(1)
    assert not torch.equal(trainer.G.mapping.w_avg, w_avg)
    # A family without R1 by default keeps none, and train.r1_gamma=0 turns stylegan2's off.
    assert _stylegan2_trainer(mnist_prepared, tiny_train_config, **{"train.r1_gamma": 0.0}).step_fn.r1_gamma == 0


def test_style_mixing_draws_later_layers_from_a_second_latent(mnist_prepared, tiny_train_config) -> None:
    mixed = _stylegan2_trainer(mnist_prepared, tiny_train_config, **{"train.style_mixing": 1.0})
    z = torch.randn(8, 16)
    mixed.noise.manual_seed(0)
    ws, w = mixed.step_fn._ws_for(z, None)
    same = [torch.equal(ws[:, i], w) for i in range(ws.shape[1])]
    assert same[0] and not same[-1] and same == sorted(same, reverse=True)  # a prefix from z, the rest from z2
    unmixed = _stylegan2_trainer(mnist_prepared, tiny_train_config, **{"train.style_mixing": 0.0})
    ws, w = unmixed.step_fn._ws_for(z, None)
    assert all(torch.equal(ws[:, i], w) for i in range(ws.shape[1]))


def test_stylegan2_refuses_spectral_norm_and_concat_conditioning(mnist_prepared, tiny_train_config) -> None:
    with pytest.raises(UserError, match="model.spectral_norm=true: stylegan2"):
        _stylegan2_trainer(mnist_prepared, tiny_train_config, **{"model.spectral_norm": True})
    with pytest.raises(UserError, match="model.cond_mode='concat'"):
        _stylegan2_trainer(mnist_prepared, tiny_train_config, **{"model.conditional": True,
                                                                  "model.cond_mode": "concat"})


# ----------------------------------------------------------------------------- wgan, ada
def test_wgan_clipping_keeps_every_critic_weight_within_clip_value(mnist_prepared, tiny_train_config) -> None:
    cfg = tiny_train_config(mnist_prepared, **{"train.loss": "wgan", "train.n_critic": 5, "train.steps": 3,
                                               "train.clip_value": 0.02, "train.d_optimizer.kind": "rmsprop",
                                               "train.d_optimizer.lr": 5e-3})
    trainer = Trainer(cfg, resume=False)
    assert isinstance(trainer.opt_d, torch.optim.RMSprop) and isinstance(trainer.opt_g, torch.optim.Adam)
    assert max(p.abs().max().item() for p in trainer.D.parameters()) > 0.02  # the init is not clipped yet
    trainer.run()
    assert max(p.abs().max().item() for p in trainer.D.parameters()) <= 0.02


def test_ada_probability_follows_the_sign_of_d_on_reals() -> None:
    ada = AdaptiveAugment("", target=0.6, batch_size=10, interval=2, kimg=0.1, device=torch.device("cpu"))
    assert ada.policy == "color,translation,cutout"  # an empty diffaugment policy means all of it
    for _ in range(4):
        ada.observe(torch.full((10,), 3.0))  # D is sure of every real: r_t = 1 > 0.6
    assert ada.p.item() == pytest.approx(0.4)  # two updates of 10·2/100
    for _ in range(2):
        ada.observe(torch.full((10,), -1.0))  # r_t = -1 < 0.6
    assert ada.p.item() == pytest.approx(0.2)
    x = torch.zeros(10, 1, 8, 8)
    ada.p = torch.tensor(0.0)
    assert torch.equal(ada(x, torch.Generator().manual_seed(0)), x)  # p = 0: nothing is augmented


def test_ada_p_rises_when_d_overfits_a_tiny_dataset(tmp_path, tiny_train_config) -> None:
    from gan_core.config import DataConfig
    from gan_core.data import prepare

    prepared = tmp_path / "tiny"
    prepare(DataConfig(source="digits", resolution=16, max_images=16, prepared_dir=str(prepared)))
    cfg = tiny_train_config(prepared, **{"model.arch": "dcgan", "train.augment": "ada", "train.steps": 60,
                                         "train.ada_kimg": 1.0, "train.ada_interval": 2, "train.log_every": 20,
                                         "train.d_optimizer.lr": 1e-3})
    trainer = Trainer(cfg, resume=False)
    result = trainer.run()
    assert trainer.ada.p.item() > 0.1 and result.final["ada_p"] == pytest.approx(trainer.ada.p.item())


# ----------------------------------------------------------------------------- the whole pipeline
STYLEGAN2_RETRAIN = ["model.arch=stylegan2", "model.g_width=8", "model.d_width=8", "model.mapping_layers=2",
                     "train.steps=6", "train.log_every=3", "train.sample_every=6", "train.checkpoint_every=6"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_stylegan2_retrain_is_registered_and_served_with_truncation(
    prefect_harness: None, retrain_workspace, tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.retrain import retrain
    from gan_core.serving.generator_model import decode_predictions

    ws = retrain_workspace(tmp_path_factory.mktemp("stylegan2"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    result = retrain(params=str(ws.params), overrides=STYLEGAN2_RETRAIN)
    assert result["status"] == "promoted" and result["version"] == "1"
    uri = "models:/ganops-generator/1"
    G = load_generator(uri)
    assert type(G).__module__ == "gan_core.models.stylegan2" and G.num_ws == 6

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": ws.db_uri, "GANOPS_DEVICE": "cpu",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log_path = ws.root / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env, cwd=ws.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_ready(server, f"{base}/ping")
            status, body = _post(f"{base}/invocations",
                                 {"dataframe_records": [{"n": 3, "seed": 5, "truncation_psi": 0.5},
                                                        {"n": 3, "seed": 5, "truncation_psi": 0}]})
            assert status == 200, body
            rows = body["predictions"]
            served = decode_predictions([r for r in rows if r["request"] == 0])
            assert torch.equal(served, sample_images(G, 3, seed=5, truncation_psi=0.5))
            average = decode_predictions([r for r in rows if r["request"] == 1])
            assert all(torch.equal(average[0], img) for img in average[1:])
            status, body = _post(f"{base}/invocations", {"dataframe_records": [{"n": 1, "truncation_psi": 2}]})
            assert status == 400 and body["message"] == (
                "request 0: truncation_psi=2; expected a number in [0, 1] (1 = no truncation)")
        finally:
            stop_process_group(server)
    assert "Traceback" not in log_path.read_text()
