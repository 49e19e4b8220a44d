"""CycleGAN's semantic-consistency term (train.semantic_weight): the judges the classifier step trains for it, the
term itself, what it does on a tiny case made to swap classes, and its refusals. Real data, training and
classifiers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from translation import TRANSLATION_SETTINGS

from gan_core.config import DataConfig, load_config
from gan_core.data import load_domains, prepare
from gan_core.errors import UserError
from gan_core.evaluation.classifier import train_classifier
from gan_core.models.cyclegan import semantic_loss
from gan_core.models.lenet import LeNet
from gan_core.packaging.classifier import JUDGE_SEED_OFFSET, load_classifier, stored_classifier, stored_judge
from gan_core.training.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
REPO = Path(__file__).resolve().parents[1]


def _squares(folder: Path, count: int, seed: int, flipped: bool = False) -> None:
    """`count` images per class at 16 px, a square of random size and place: class 0 a white square on black,
    class 1 a black square on white (`flipped`: the other way round)."""
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        (folder / str(label)).mkdir(parents=True)
        white_on_black = (label == 0) != flipped
        for i in range(count):
            side = int(rng.integers(5, 10))
            x, y = rng.integers(0, 16 - side, 2)
            image = np.full((16, 16), 0 if white_on_black else 255, np.uint8)
            image[y : y + side, x : x + side] = 255 if white_on_black else 0
            Image.fromarray(image).save(folder / str(label) / f"{i:03d}.png")


def _config(root: Path, prepared: Path, **overrides: object):
    root.mkdir(parents=True, exist_ok=True)
    empty = root / "empty_params.yaml"
    empty.write_text("{}\n")
    base = {**TRANSLATION_SETTINGS, "data.prepared_dir": str(prepared), "train.device": "cpu",
            "train.out_dir": str(root / "train"), "eval.device": "cpu",
            "eval.classifier.out_dir": str(root / "classifier"), "eval.classifier.resolution": 16,
            "train.semantic_weight": 1.0}
    return load_config(empty, {**base, **overrides})


@pytest.fixture(scope="module")
def swap_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two domains of the same pictures, labelled the other way round: A's class 0 is a white square on black,
    B's class 0 a black square on white.

    CycleGAN's losses never see a label: the cheapest translation keeps the picture (the identity loss pulls G to
    it), which swaps every image's class. Keeping the class takes inverting the picture, an easy map that only the
    semantic term asks for. The per-domain classifiers and judges are trained once."""
    root = tmp_path_factory.mktemp("swap_case")
    _squares(root / "a", 50, seed=0)
    _squares(root / "b", 50, seed=1, flipped=True)
    prepared = root / "prepared"
    prepare(DataConfig(source=f"folder:{root / 'a'}", target=f"folder:{root / 'b'}", resolution=16,
                       prepared_dir=str(prepared)))
    overrides = {"data.source": f"folder:{root / 'a'}", "data.target": f"folder:{root / 'b'}",
                 "model.g_width": 8, "model.d_width": 8, "train.batch_size": 8, "train.steps": 100,
                 "train.identity_weight": 0.1, "train.g_optimizer.lr": 1e-3, "train.d_optimizer.lr": 1e-3,
                 "train.log_every": 50, "train.sample_every": 1000, "train.checkpoint_every": 1000,
                 "eval.classifier.epochs": 20, "eval.classifier.batch_size": 16}
    info = train_classifier(_config(root, prepared, **overrides))
    assert info["holdout_accuracy"] >= 0.9 and all(j["holdout_accuracy"] >= 0.9 for j in info["judges"].values())
    return prepared, {**overrides, "eval.classifier.out_dir": str(root / "classifier")}


def _swapped(trainer: Trainer, prepared: Path, cfg) -> dict[str, float]:
    """Share of each domain's images whose translation the *evaluation* classifier of the target domain (not a
    judge: another seed) gives another class than the image's own."""
    domains = load_domains(prepared)
    G = trainer.ema.module.eval()
    rates = {}
    for d, source, target in (("a2b", "a", "b"), ("b2a", "b", "a")):
        judge = load_classifier(stored_classifier(cfg, target)["model_dir"])
        with torch.no_grad():
            out = G(domains[source].images.float() / 127.5 - 1, d)
        translated = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        rates[d] = float((judge.predict(translated) != domains[source].labels).double().mean())
    return rates


# ----------------------------------------------------------------------------- the judges
def test_the_classifier_step_trains_a_judge_per_domain_beside_evaluations_classifier(swap_case, tmp_path) -> None:
    prepared, overrides = swap_case
    cfg = _config(tmp_path, prepared, **overrides)
    info = train_classifier(cfg)  # the fixture trained them: all reused
    assert not any(i["trained"] for i in [*info["domains"].values(), *info["judges"].values()])
    for domain in ("a", "b"):
        judge, classifier = info["judges"][domain], info["domains"][domain]
        assert judge["settings"]["seed"] == classifier["settings"]["seed"] + JUDGE_SEED_OFFSET
        assert judge["training_key"] != classifier["training_key"]
        assert Path(judge["model_dir"]).name == domain and Path(judge["model_dir"]).parent.name == "judge"
        assert stored_judge(cfg, domain)["training_key"] == judge["training_key"]
    metrics = json.loads((Path(cfg.eval.classifier.out_dir) / "metrics.json").read_text())
    assert metrics["judge_holdout_accuracy_a"] == info["judges"]["a"]["holdout_accuracy"] >= 0.9
    assert metrics["judge_holdout_accuracy_b"] == info["judges"]["b"]["holdout_accuracy"] >= 0.9
    # Without the term, the step trains (and reports) no judges.
    assert "judges" not in train_classifier(_config(tmp_path, prepared, **{**overrides, "train.semantic_weight": 0}))


def test_semantic_loss_scores_the_translation_with_the_target_judge_against_the_source_judges_label() -> None:
    torch.manual_seed(0)
    source_judge, target_judge = (LeNet(1, 3, resolution=16).eval().requires_grad_(False) for _ in range(2))
    source = torch.rand(5, 1, 16, 16) * 2 - 1
    translated = (torch.rand(5, 1, 16, 16) * 2 - 1).requires_grad_(True)
    loss = semantic_loss(source_judge, target_judge, source, translated)
    labels = source_judge(source).argmax(1)
    assert torch.allclose(loss, F.cross_entropy(target_judge(translated), labels))
    loss.backward()
    assert translated.grad is not None and translated.grad.abs().sum() > 0  # G learns through the translation
    assert all(p.grad is None for p in [*source_judge.parameters(), *target_judge.parameters()])  # judges frozen
    # Any side: the judge resizes (32 px images for a 16 px judge, differentiably).
    big = (torch.rand(5, 1, 32, 32) * 2 - 1).requires_grad_(True)
    semantic_loss(source_judge, target_judge, source, big).backward()
    assert big.grad is not None and big.grad.shape == big.shape


@pytest.mark.slow
def test_the_term_lowers_the_swapped_class_rate_on_a_tiny_case(swap_case, tmp_path) -> None:
    prepared, overrides = swap_case
    rates, judges = {}, {}
    for weight in (0.0, 1.0):
        cfg = _config(tmp_path / str(weight), prepared, **{**overrides, "train.semantic_weight": weight})
        trainer = Trainer(cfg, resume=False)
        judges[weight] = {k: {n: p.clone() for n, p in judge.state_dict().items()}
                          for k, judge in trainer.step_fn.judges.items()}
        final = trainer.run().final
        assert ("semantic_ce" in final) == (weight > 0)
        rates[weight] = _swapped(trainer, prepared, cfg)
        for domain, judge in trainer.step_fn.judges.items():  # frozen: read, never trained
            assert not any(p.requires_grad for p in judge.parameters())
            assert all(torch.equal(p, judges[weight][domain][n]) for n, p in judge.state_dict().items())
    # Plain CycleGAN keeps the pictures, so nearly every class is swapped; the judges make it invert them.
    # Measured (one thread): 0.99 / 1.00 without the term, 0.11 / 0.00 with it; 0.18 / 0.04 at 60 steps.
    for d in ("a2b", "b2a"):
        assert rates[0.0][d] >= 0.8, rates
        assert rates[1.0][d] <= 0.3 and rates[1.0][d] < rates[0.0][d] / 3, rates


# ----------------------------------------------------------------------------- refusals
def _flat(folder: Path, n: int = 30) -> Path:
    """A flat folder of PNGs: unlabelled."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("domain", ["a", "b"])
def test_an_unlabelled_domain_is_refused_in_one_line_before_any_training(domain: str, tmp_path: Path) -> None:
    flat = f"folder:{_flat(tmp_path / 'flat')}"
    sources = {"source": "digits", "target": "mnist5k"}
    sources["source" if domain == "a" else "target"] = flat
    prepared = tmp_path / "prepared"
    prepare(DataConfig(**sources, resolution=16, max_images=30, prepared_dir=str(prepared)))
    key = "data.source" if domain == "a" else "data.target"
    expected = (rf"train.semantic_weight=1.0 needs class labels in both domains, but domain {domain.upper()} "
                rf"\({key}='folder:.*flat'\) has none; .* or set train.semantic_weight=0$")
    # A flat folder says so when the config loads (its top level is listed), before anything is prepared or trained.
    with pytest.raises(UserError, match=expected) as info:
        _config(tmp_path, prepared, **{"data.source": sources["source"], "data.target": sources["target"]})
    assert "\n" not in str(info.value)
    # Labels known only once the data is read (a source the config cannot list) are checked by the classifier step
    # and the trainer: the same words.
    cfg = _config(tmp_path, prepared)  # digits ↔ mnist5k by name, over data prepared with the flat folder
    for start in (lambda: train_classifier(cfg), lambda: Trainer(cfg, resume=False)):
        with pytest.raises(UserError, match="^" + expected) as info:
            start()
        assert "\n" not in str(info.value)
    assert not Path(cfg.eval.classifier.out_dir).exists()  # refused before a classifier was trained
    # Plain CycleGAN (no judges, measured in the inception space) trains on unlabelled domains as before.
    plain = _config(tmp_path, prepared, **{"data.source": sources["source"], "data.target": sources["target"],
                                           "train.semantic_weight": 0.0, "train.steps": 1,
                                           "eval.extractors": ["inception"]})
    assert Trainer(plain, resume=False).run().steps == 1


def test_domains_with_other_classes_are_refused(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        _flat(tmp_path / "pets" / name, n=10)
    prepared = tmp_path / "prepared"
    prepare(DataConfig(source="digits", target=f"folder:{tmp_path / 'pets'}", resolution=16, max_images=20,
                       prepared_dir=str(prepared)))
    cfg = _config(tmp_path, prepared, **{"data.target": f"folder:{tmp_path / 'pets'}"})
    with pytest.raises(UserError, match=r"needs the same classes in both domains, but domain A has \['0', '1', "
                                        r".* and B has \['cat', 'dog'\]; set train.semantic_weight=0$"):
        Trainer(cfg, resume=False)


def test_missing_judges_say_how_to_train_them(pair_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^no judge of domain A for this data and eval.classifier settings in "
                                        r"'.*judge/a'; train it first: `python -m gan_core classifier`"):
        Trainer(_config(tmp_path, pair_prepared), resume=False)


def test_the_term_is_on_by_default_and_in_the_translation_demos() -> None:
    from gan_core.config.catalogue import CycleGANTrain

    assert CycleGANTrain().semantic_weight == 1.0
    for name in ("cyclegan-digits", "cyclegan-ink-neon"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.train.semantic_weight > 0
        thresholds = cfg.gate.thresholds
        assert thresholds["content_lenet_a2b"].min >= 0.85 and thresholds["content_lenet_b2a"].min >= 0.85
