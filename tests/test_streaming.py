"""Streaming reads of a prepared dataset: a batch read from the shards is the same bytes as one gathered from the set
in memory, so training streamed gives the same weights; real features streamed give FID over every image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gan_core.data import holdout_split, load_prepared
from gan_core.data.feed import ResidentImages, StreamedImages, training_images


def test_take_reads_the_same_bytes_as_the_set_in_memory(mnist_prepared) -> None:
    streamed, whole = load_prepared(mnist_prepared), load_prepared(mnist_prepared)
    images = whole.images  # (N, C, H, W) read once
    assert streamed._images is None
    gen = torch.Generator().manual_seed(0)
    for batch in (torch.randperm(len(whole), generator=gen)[:64], torch.arange(100, 164), torch.tensor([5, 5, 0])):
        assert torch.equal(streamed.take(batch), images[batch])
    assert streamed._images is None  # take never read the whole set
    # A view (the held-out tail) reads its own rows in the same order.
    train_part, held = holdout_split(streamed, 0.1)
    assert torch.equal(held.take(torch.arange(len(held))), images[len(train_part):])
    assert torch.equal(held.images, images[len(train_part):]) and torch.equal(held.labels, whole.labels[900:])


def test_training_streamed_from_the_shards_gives_the_same_weights(
    mnist_prepared, tiny_train_config, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from gan_core.training.loop import Trainer, train

    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 6, "model.conditional": True})
    in_memory = Trainer(cfg)
    assert isinstance(in_memory.domains[""].images, ResidentImages)
    first = train(cfg, resume=False)
    monkeypatch.setattr("gan_core.data.feed.IN_MEMORY_BYTES", 0)  # every set is "large": read batch by batch
    streamed = Trainer(cfg)
    assert isinstance(streamed.domains[""].images, StreamedImages)
    for k in (0, 1, 17):
        assert torch.equal(streamed.real_batch(k)[0], in_memory.real_batch(k)[0])
        assert torch.equal(streamed.real_batch(k)[1], in_memory.real_batch(k)[1])
    second = train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"out_dir": str(tmp_path / "s")})}),
                   resume=False)
    weights = [Path(r.package_dir) / "weights.safetensors" for r in (first, second)]
    assert weights[0] != weights[1] and weights[0].read_bytes() == weights[1].read_bytes()


def test_training_images_picks_memory_for_small_sets_and_streams_large_ones(
    mnist_prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = load_prepared(mnist_prepared)
    cpu = torch.device("cpu")
    small = training_images(ds, cpu)
    assert isinstance(small, ResidentImages) and len(small) == len(ds)
    monkeypatch.setattr("gan_core.data.feed.IN_MEMORY_BYTES", ds.nbytes - 1)
    large = training_images(load_prepared(mnist_prepared), cpu)
    assert isinstance(large, StreamedImages) and len(large) == len(ds)
    idx = torch.tensor([3, 999, 0, 3])
    large.prefetch(idx)  # a no-op on the CPU
    assert torch.equal(large.take(idx), small.take(idx))


def test_real_features_of_a_large_set_stream_every_image_into_fid_and_sample_the_rest(
    mnist_prepared, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above REAL_SAMPLE images: FID's mean and covariance over all of them (one streamed pass), KID and
    precision/recall against a seeded sample; both read back from the cache."""
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics

    from gan_core.config import load_config
    from gan_core.evaluation import fidelity
    from gan_core.evaluation.classifier import train_classifier
    from gan_core.packaging.classifier import model_dir

    empty = tmp_path / "params.yaml"
    empty.write_text("{}\n")
    cfg = load_config(empty, [f"data.prepared_dir={mnist_prepared}", "eval.classifier.epochs=1",
                              f"eval.classifier.out_dir={tmp_path / 'classifier'}", "eval.device=cpu"])
    train_classifier(cfg)
    lenet = fidelity.load_extractor("lenet", model_dir(cfg))
    ds = load_prepared(mnist_prepared)
    everything = fidelity.extract_features(fidelity.ImagesDataset(ds.images), lenet, batch_size=200)

    monkeypatch.setattr(fidelity, "REAL_SAMPLE", 300)
    version = "0" * 32 + ".dir"
    streamed = fidelity.real_features(ds, lenet, data_version=version, cache_dir=tmp_path, batch_size=128)
    assert not streamed.cached and streamed.count == 300
    expected = fid_featuresdict_to_statistics(everything, lenet.layer("fid"))
    assert streamed.fid_statistics["mu"].dtype == expected["mu"].dtype == np.float32
    np.testing.assert_allclose(streamed.fid_statistics["mu"], expected["mu"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(streamed.fid_statistics["sigma"], expected["sigma"], rtol=1e-6, atol=1e-6)
    sample = np.sort(np.random.default_rng(0).choice(len(ds), 300, replace=False))
    for layer, features in streamed.features.items():
        torch.testing.assert_close(features, everything[layer][torch.from_numpy(sample)], rtol=1e-5, atol=1e-5)
    again = fidelity.real_features(ds, lenet, data_version=version, cache_dir=tmp_path, batch_size=128)
    assert again.cached and np.array_equal(again.fid_statistics["sigma"], streamed.fid_statistics["sigma"])

    # FID from the streamed statistics equals FID against every real feature.
    fake = fidelity.ImagesDataset(ds.images[:200])
    settings = {"kid_subset_size": 100, "seed": 1, "batch_size": 100}
    full = fidelity.fidelity_metrics(fake, everything, lenet, **settings)
    ours = fidelity.fidelity_metrics(fake, streamed.features, lenet, real_fid_statistics=streamed.fid_statistics,
                                     **settings)
    assert ours["fid_lenet"] == pytest.approx(full["fid_lenet"], rel=1e-4)
