"""The label-free feature space (issue 28): which space a data source gets at config time, the simclr domain encoder
(deterministic, cached, pickle-free) and what its numbers measure, on real data and a real tiny training.

    OMP_NUM_THREADS=1 pytest -q tests/test_label_free.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

from gan_core.config import ConfigError, load_config
from gan_core.data import load_prepared
from gan_core.errors import UserError
from gan_core.evaluation.encoder import (
    SPEC_FILE,
    WEIGHTS_FILE,
    cluster_coverage,
    load_encoder,
    stored_encoder,
    train_encoder,
)
from gan_core.evaluation.extractors import UNUSED_FILE, train_extractor
from gan_core.evaluation.fidelity import ImagesDataset, extract_features, fidelity_metrics, load_extractor

REPO = Path(__file__).resolve().parents[1]
LABEL_FREE_GATE = {"fid_simclr", "cluster_coverage_simclr"}


def _empty(tmp_path: Path) -> Path:
    """A params file with nothing in it: the code's defaults."""
    path = tmp_path / "empty_params.yaml"
    path.write_text("{}\n")
    return path


# ----------------------------------------------------------------------------- which space a source gets
def _flat(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.png").write_bytes(b"")  # config time lists the folder; it never opens an image
    return root


def test_a_flat_folder_is_measured_and_gated_in_the_label_free_space(tmp_path: Path) -> None:
    flat = _flat(tmp_path / "flat")
    (flat / ".hidden").mkdir()  # hidden folders are not classes, as in the folder walk
    cfg = load_config(REPO / "params.yaml", [f"data.source=folder:{flat}"])
    assert cfg.eval.extractors == ["simclr"]
    assert set(cfg.gate.thresholds) == LABEL_FREE_GATE and cfg.gate.primary_metric == "fid_simclr"
    # What the flow logs to MLflow and hashes is the routed config.
    assert cfg.flat()["eval.extractors"] == ["simclr"] and "gate.thresholds.fid_simclr.max" in cfg.flat()


def test_labelled_sources_keep_lenet(tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    (classes / "cat").mkdir(parents=True)
    (classes / "dog").mkdir()
    for source in ("mnist5k", "digits", f"folder:{classes}", "torchvision:FashionMNIST",
                   f"folder:{tmp_path / 'missing'}"):  # a missing folder is prepare's to report
        cfg = load_config(REPO / "params.yaml", [f"data.source={source}"])
        assert cfg.eval.extractors == ["lenet"], source
        assert cfg.gate.primary_metric == "fid_lenet" and "class_coverage" in cfg.gate.thresholds


@pytest.mark.parametrize(("overrides", "message"), [
    (["eval.extractors=[lenet,simclr]"], "holds lenet, a classifier trained on the labels: use simclr"),
    (["recipe=conditional"], "model.conditional=true needs them"),
    (["gate.thresholds={fid_lenet: {max: 50}}"], "gate metric 'fid_lenet' is measured by the lenet classifier"),
    (["--params-cyclegan"], r"train.semantic_weight=1.0 needs class labels in both domains, but domain A"),
    (["--params-cyclegan", "train.semantic_weight=0"],
     r"translation \(cyclegan\) judges content with each domain's classifier"),
])
def test_settings_that_need_labels_are_refused_on_a_flat_folder_before_anything_runs(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    flat = _flat(tmp_path / "flat")
    params = REPO / "params.yaml"
    if overrides[0] == "--params-cyclegan":
        params, overrides = REPO / "configs" / "cyclegan-digits.yaml", [f"data.target=folder:{flat}", *overrides[1:]]
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(params, [f"data.source=folder:{flat}", *overrides])
    assert "\n" not in str(refused.value) and "labels" in str(refused.value)


def test_measuring_only_simclr_turns_the_default_gate_label_free() -> None:
    cfg = load_config(REPO / "params.yaml", ["eval.extractors=[simclr]"])
    assert set(cfg.gate.thresholds) == LABEL_FREE_GATE
    kept = load_config(REPO / "params.yaml", ["eval.extractors=[simclr,lenet]"])  # lenet measured: its gate stays
    assert kept.gate.primary_metric == "fid_lenet"
    with pytest.raises(ConfigError, match="'class_coverage' is measured by the lenet classifier"):
        load_config(REPO / "params.yaml", ["eval.extractors=[simclr]", "gate.primary_metric=class_coverage"])
    # Each gate setting left at its default follows the space.
    mine = load_config(REPO / "params.yaml", ["eval.extractors=[simclr]", "gate.thresholds={fid_simclr: {max: 3}}"])
    assert mine.gate.primary_metric == "fid_simclr" and mine.gate.thresholds["fid_simclr"].max == 3
    with pytest.raises(ConfigError, match="simclr is not measured for translation"):
        load_config(REPO / "configs" / "cyclegan-digits.yaml", ["eval.extractors=[lenet,simclr]"])


# ----------------------------------------------------------------------------- the encoder as a stored model
QUICK = {"eval.encoder.epochs": 1, "eval.encoder.batch_size": 64, "eval.encoder.resolution": 16,
         "eval.encoder.clusters": 8, "eval.extractors": ["simclr"]}


def test_encoder_training_is_deterministic_cached_and_keyed_by_data_and_settings(
    digits_prepared: Path, eval_config, tmp_path: Path
) -> None:
    def cfg(where: str, **more: object):
        return eval_config(digits_prepared, **{**QUICK, "eval.encoder.out_dir": str(tmp_path / where), **more})

    first = train_encoder(cfg("a"))
    twin = train_encoder(cfg("b"))
    other_seed = train_encoder(cfg("c", **{"eval.encoder.seed": 1}))
    weights = {name: (tmp_path / name / "model" / WEIGHTS_FILE).read_bytes() for name in "abc"}
    assert first["trained"] and weights["a"] == weights["b"] != weights["c"]
    assert first["training_key"] == twin["training_key"] != other_seed["training_key"]
    assert first["final_loss"] < first["chance_loss"]  # it learned to tell views apart
    assert sum(first["cluster_sizes"]) == len(load_prepared(digits_prepared)) and len(first["cluster_sizes"]) == 8

    before = (tmp_path / "a" / "model" / WEIGHTS_FILE).stat().st_mtime_ns
    again = train_encoder(cfg("a", **{"eval.num_samples": 300}))  # evaluation settings do not shape it
    assert again["trained"] is False and (tmp_path / "a" / "model" / WEIGHTS_FILE).stat().st_mtime_ns == before
    assert stored_encoder(cfg("a"))["training_key"] == first["training_key"]
    with pytest.raises(UserError, match=r"no domain encoder .* `python -m gan_core encoder`"):
        stored_encoder(cfg("a", **{"eval.encoder.epochs": 2}))


def test_a_damaged_encoder_is_retrained_and_loading_one_names_the_file(
    digits_prepared: Path, eval_config, tmp_path: Path
) -> None:
    cfg = eval_config(digits_prepared, **QUICK, **{"eval.encoder.out_dir": str(tmp_path / "enc")})
    model = Path(train_encoder(cfg)["model_dir"])
    good = (model / WEIGHTS_FILE).read_bytes()
    (model / WEIGHTS_FILE).write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=rf"{WEIGHTS_FILE}: not a readable safetensors file"):
        load_encoder(model)
    with pytest.warns(UserWarning, match="retraining the domain encoder"):
        assert train_encoder(cfg)["trained"] is True
    assert (model / WEIGHTS_FILE).read_bytes() == good  # the same deterministic training
    spec = json.loads((model / SPEC_FILE).read_text())
    (model / SPEC_FILE).write_text(json.dumps({**spec, "kwargs": {**spec["kwargs"], "feature_dim": 7}}))
    with pytest.raises(UserError, match=rf"{WEIGHTS_FILE}: does not match {SPEC_FILE}"):
        load_encoder(model)


def test_the_extractor_steps_record_what_they_do_not_train(
    digits_prepared: Path, shapes_folder: Path, eval_config, tmp_path: Path
) -> None:
    from gan_core.cli import app, run_app
    from gan_core.data import prepare

    # Labelled data measured in lenet: the encoder is not needed, and says so (DVC's `encoder` output exists).
    labelled = eval_config(digits_prepared, **{"eval.encoder.out_dir": str(tmp_path / "enc")})
    unused = train_extractor(labelled, "simclr")
    assert unused["used"] is False and "leaves simclr out" in unused["reason"]
    assert json.loads((tmp_path / "enc" / "model" / UNUSED_FILE).read_text())["extractor"] == "simclr"
    with pytest.raises(UserError, match="no domain encoder"):
        stored_encoder(labelled)  # an unused directory is never read as a model

    # A flat folder: no labels, so no classifier (its stage writes numbers only); the encoder trains.
    flat = load_config(_empty(tmp_path), {
        "data.source": f"folder:{shapes_folder}", "data.channels": 3, "data.prepared_dir": str(tmp_path / "prep"),
        "eval.classifier.out_dir": str(tmp_path / "cls"), "eval.encoder.out_dir": str(tmp_path / "enc"),
        "eval.device": "cpu", **{k: v for k, v in QUICK.items() if k != "eval.extractors"}})
    prepare(flat.data)
    assert flat.eval.extractors == ["simclr"]
    assert train_extractor(flat, "lenet")["used"] is False
    assert json.loads((tmp_path / "cls" / "metrics.json").read_text()) == {"used": 0}
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(json.loads(flat.model_dump_json())))
    assert run_app(app, ["encoder", "--params", str(params)]) == 0
    assert json.loads((tmp_path / "enc" / "model" / SPEC_FILE).read_text())["data_source"] == f"folder:{shapes_folder}"


# ----------------------------------------------------------------------------- what it measures
# mnist5k, 2,500 vs 2,500 images, the default encoder (6 epochs). Measured on this 2-core CPU over encoder seeds 0-2
# (stand-ins for another CPU; benchmarks/label_free.py, benchmarks/results/label_free_cpu.json; README, Evaluation):
#   fid_simclr  real halves 0.29-0.31 < noise 8: 0.68-1.17 < 16: 1.9-3.4 < 32: 6.7-12.7 < 64: 39-63 < uniform 266-667
#               collapsed (10 images) 37.0-38.3
#   cluster_coverage_simclr  real 1.0, noise 64: 0.75-0.9, uniform 0.1-0.15, collapsed 0.35-0.4
# Each bound below sits inside every measured run: noise 8 is 2.3-4x the real halves (the bound: 2x), uniform 4-17x
# noise 64 (1.5x), collapsed 120-130x the real halves (10x).
def _noisy(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def known_cases(mnist5k_full_prepared: Path, simclr_encoder: dict) -> dict[str, dict[str, float]]:
    """fid/kid/precision/recall_simclr and cluster_coverage_simclr of known samplers against half B of mnist5k."""
    images = load_prepared(mnist5k_full_prepared).images
    half_a, half_b = images[:2500], images[2500:]
    simclr = load_extractor("simclr", simclr_encoder["model_dir"])
    encoder = load_encoder(simclr_encoder["model_dir"])
    real_b = extract_features(ImagesDataset(half_b), simclr, batch_size=250)
    samplers = {"real": half_a, **{f"noise{s}": _noisy(half_a, s, seed=s) for s in (8, 16, 32, 64)},
                "uniform": torch.randint(0, 256, half_a.shape, generator=torch.Generator().manual_seed(1),
                                         dtype=torch.uint8),
                "collapsed": half_a[:10].repeat(250, 1, 1, 1)}  # 10 real images, each 250 times
    out = {}
    for name, fake in samplers.items():
        metrics = fidelity_metrics(ImagesDataset(fake), real_b, simclr, batch_size=250)
        clusters = encoder.nearest_cluster(encoder.features(fake))
        out[name] = {**metrics, "coverage": cluster_coverage(clusters, encoder.cluster_shares, 0.2)}
    return out


def test_real_halves_far_below_noise_monotone_in_its_level_far_below_uniform(known_cases: dict) -> None:
    fid = {name: case["fid_simclr"] for name, case in known_cases.items()}
    assert all(math.isfinite(v) for case in known_cases.values() for v in case.values())
    assert fid["real"] * 2 < fid["noise8"] < fid["noise16"] < fid["noise32"] < fid["noise64"]
    assert fid["noise64"] * 1.5 < fid["uniform"]
    kid = {name: case["kid_simclr"] for name, case in known_cases.items()}
    assert kid["real"] < kid["noise8"] < kid["noise16"] < kid["noise32"] < kid["noise64"] < kid["uniform"]
    real = known_cases["real"]
    assert real["precision_simclr"] > 0.8 and real["recall_simclr"] > 0.8 and real["coverage"] == 1.0
    assert known_cases["uniform"]["recall_simclr"] < 0.05 and known_cases["uniform"]["coverage"] <= 0.2


def test_a_collapsed_sampler_scores_clearly_worse_and_reaches_few_clusters(known_cases: dict) -> None:
    collapsed, real = known_cases["collapsed"], known_cases["real"]
    assert collapsed["fid_simclr"] > 10 * real["fid_simclr"]
    assert collapsed["recall_simclr"] < 0.2 < real["recall_simclr"]
    # 10 images reach at most 10 of the 20 clusters.
    assert collapsed["coverage"] <= 0.5 < real["coverage"]


def test_the_stored_numbers_describe_the_space(simclr_encoder: dict) -> None:
    """The normalised space: the real features' total variance is 100, so FID is in % of the real spread."""
    assert simclr_encoder["real_halves_fid"] < 2.0  # 2,500 vs 2,500 real images: the floor
    assert simclr_encoder["final_loss"] < 0.6 * simclr_encoder["chance_loss"]
    assert min(simclr_encoder["cluster_sizes"]) > 0 and sum(simclr_encoder["cluster_sizes"]) == 5000


@pytest.mark.slow
def test_checkpoints_of_one_training_rank_as_fid_lenet_ranks_them(
    mnist_prepared: Path, mnist5k_full_prepared: Path, lenet_classifier: dict, simclr_encoder: dict,
    tiny_train_config, eval_config,
) -> None:
    """The cheaper version of benchmarks/label_free.py's checkpoint study: a small DCGAN on 1,000 mnist images,
    saved at six step counts, each evaluated on 500 samples in both spaces."""
    from gan_core.evaluation.evaluate import evaluate
    from gan_core.training.loop import train

    fid = {"lenet": [], "simclr": []}
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"], **{
        "eval.extractors": ["lenet", "simclr"], "eval.encoder.out_dir": simclr_encoder["out_dir"],
        "eval.classifier.min_accuracy": 0.9})
    for steps in (25, 50, 100, 200, 400, 800):
        train_cfg = tiny_train_config(mnist_prepared, **{
            "model.arch": "dcgan", "model.g_width": 16, "model.d_width": 16, "model.latent_dim": 32,
            "train.batch_size": 32, "train.steps": steps, "train.g_optimizer.lr": 0.0011,
            "train.d_optimizer.lr": 0.0018, "train.sample_every": 10**6, "train.checkpoint_every": 10**6,
            "train.log_every": 100})
        package = train(train_cfg).package_dir  # resumes the previous count's checkpoint: one training
        metrics = evaluate(cfg, package).metrics
        fid["lenet"].append(metrics["fid_lenet"])
        fid["simclr"].append(metrics["fid_simclr"])
    assert spearmanr(fid["lenet"], fid["simclr"]).statistic >= 0.9, fid
    assert fid["simclr"][-1] < fid["simclr"][0] / 5  # training visibly helps in both spaces


def test_rgb_shapes_collapse_and_noise_are_seen_without_labels(
    shapes_folder: Path, tmp_path: Path, eval_config
) -> None:
    """On an RGB flat folder (12 modes of coloured shapes): one mode repeated, or the images under noise, score far
    from the real set, and the collapsed sampler reaches few clusters."""
    from gan_core.data import prepare

    cfg = load_config(_empty(tmp_path), {
        "data.source": f"folder:{shapes_folder}", "data.channels": 3, "data.resolution": 32,
        "data.prepared_dir": str(tmp_path / "prep"), "eval.encoder.out_dir": str(tmp_path / "enc"),
        "eval.encoder.batch_size": 100, "eval.encoder.epochs": 10, "eval.encoder.clusters": 12, "eval.device": "cpu"})
    prepare(cfg.data)
    info = train_encoder(cfg)
    images = load_prepared(cfg.data.prepared_dir).images
    assert images.shape[1:] == (3, 32, 32)
    half_a, half_b = images[::2], images[1::2]  # both halves hold every mode (written in turn)
    simclr = load_extractor("simclr", info["model_dir"])
    encoder = load_encoder(info["model_dir"])
    real_b = extract_features(ImagesDataset(half_b), simclr, batch_size=150)

    def measure(fake: torch.Tensor) -> tuple[float, float]:
        fid = fidelity_metrics(ImagesDataset(fake), real_b, simclr, batch_size=150, kid_subset_size=100)["fid_simclr"]
        return fid, cluster_coverage(encoder.nearest_cluster(encoder.features(fake)), encoder.cluster_shares, 0.2)

    real, real_coverage = measure(half_a)
    noisy, _ = measure(_noisy(half_a, 64, seed=0))
    one_mode, one_mode_coverage = measure(half_a[0:1].repeat(len(half_a), 1, 1, 1))
    print(f"shapes: real {real:.3f} ({real_coverage:.2f}), noise 64 {noisy:.3f}, one image {one_mode:.3f} "
          f"({one_mode_coverage:.2f})")
    assert real * 1.5 < noisy and real * 10 < one_mode
    assert one_mode_coverage < 0.3 < real_coverage

