"""torch-fidelity glue: our feature extractors, Dataset wrappers, a pickle-free cache of the real features, and one
call that returns our metric names.

    lenet = load_extractor("lenet", "outputs/classifier/model")      # weights loaded once, never unpickled
    real = real_features(prepared.images, lenet, data_version=v, cache_dir="outputs/cache", batch_size=200)
    fake = GeneratedImages(G, 2000, seed=1234, batch_size=200)         # streamed: one batch in memory at a time
    fidelity_metrics(fake, real.features, lenet, batch_size=200, kid_subset_size=1000, seed=1234)
    # → {"fid_lenet": .., "kid_lenet": .., "kid_lenet_std": .., "precision_lenet": .., "recall_lenet": ..}

Facts about torch-fidelity 0.4 this module is built around:
- Its file cache loads hits with torch.load(weights_only=False): a planted file there runs code. So it is never
  given a cache: features come from its extractor API and metrics from its feature-level functions (the same
  code calculate_metrics runs, so the numbers are the same), and the real features are cached here, in
  safetensors, under a key holding the data version, the extractor and a digest of its weights.
- A Dataset input must yield uint8 (3, H, W) tensors: grayscale is repeated to 3 channels here.
- Its generator wrapper draws class labels with `np.int` (gone from NumPy), so generated samples go in as a
  Dataset (GeneratedImages), which also keeps sampling on our seed and our `sample_images`.
- Its InceptionV3 reads its weights with torch.load(weights_only=False). `ganops-inception-v3` is the same network
  given a state dict that ganops loaded with weights_only=True; `ganops-lenet` is the domain classifier,
  `ganops-simclr` the label-free domain encoder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from gan_core.atomic import atomic_file
from gan_core.config import metrics as m
from gan_core.data.prepared import PreparedDataset
from gan_core.errors import UserError, first_line
from gan_core.evaluation.encoder import load_encoder
from gan_core.packaging.classifier import load_classifier
from gan_core.packaging.generator import sample_images
from gan_core.preflight import OFFLINE_ENV, downloads_forbidden

LENET_EXTRACTOR = "ganops-lenet"
INCEPTION_EXTRACTOR = "ganops-inception-v3"
SIMCLR_EXTRACTOR = "ganops-simclr"
TORCH_FIDELITY_NAME = {"lenet": LENET_EXTRACTOR, "inception": INCEPTION_EXTRACTOR, "simclr": SIMCLR_EXTRACTOR}
INCEPTION_WEIGHTS_ENV = "GANOPS_INCEPTION_WEIGHTS"

PAIR_METRICS = ("fid", "kid", "prc")
"""Metrics comparing generated with real features: the real set needs only their feature layers."""
PRC_NEIGHBORHOOD = DEFAULTS["prc_neighborhood"]
"""Precision/recall measure each sample's distance to its k-th nearest neighbour: a set needs k + 1 samples."""
ISC_SPLITS = DEFAULTS["isc_splits"]
"""The Inception score averages over this many groups of samples: fewer samples give empty groups (NaN)."""
# Precision/recall hold a (prc_batch_size, N) distance block: torch-fidelity's 10,000 rows made peak memory grow
# from 1.3 GB (5k samples) to 3.8 GB (20k); 1,000 rows keep the block at 4 kB × N.
PRC_BATCH_SIZE = 1000
REAL_SAMPLE = 10_000
"""KID and precision/recall compare with at most this many real images: a larger set is represented by a seeded
uniform sample of them (precision/recall's cost grows with the square of the real count: 100k real images would
need 1e10 distances). FID's mean and covariance are still taken over every real image, streamed."""
CACHE_FORMAT = "ganops-real-features/1"


# ----------------------------------------------------------------------------- datasets
class ImagesDataset(Dataset):
    """uint8 images (N, C, H, W), C in {1, 3} → items uint8 (3, H, W), the form torch-fidelity takes. `images` is a
    tensor or a prepared dataset (read a chunk of rows at a time, in order, as torch-fidelity asks for them)."""

    CHUNK = 512

    def __init__(self, images: torch.Tensor | PreparedDataset):
        if isinstance(images, PreparedDataset):
            dtype, shape = torch.uint8, [len(images), *images.shape]
        else:
            dtype, shape = images.dtype, list(images.shape)
        if dtype != torch.uint8 or len(shape) != 4 or shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {dtype} {shape}")
        self.images = images
        self._chunk: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[i].expand(3, -1, -1)  # (3, H, W); a view, no copy for grayscale
        start = i - i % self.CHUNK
        if self._chunk is None or self._chunk[0] != start:
            self._chunk = (start, self.images.take(np.arange(start, min(start + self.CHUNK, len(self.images)))))
        return self._chunk[1][i - start].expand(3, -1, -1)


ChunkObserver = Callable[[int, torch.Tensor, torch.Tensor | None], None]


class GeneratedImages(Dataset):
    """`n` generated images, made one chunk of `batch_size` at a time with `sample_images` and a per-chunk seed.

    Items are uint8 (3, H, W). Chunk k always holds the same images (seed derived from `seed` and k), so the
    set does not depend on the order torch-fidelity reads it in, and memory holds one chunk, not all n images.
    Conditional generators get classes cycled 0, 1, 2, ... over the whole set (`labels_for`).
    Observers see every chunk as it is made: (chunk index, uint8 (b, C, H, W) images, labels (b,) | None).
    """

    def __init__(self, generator: torch.nn.Module, n: int, seed: int, batch_size: int):
        self.generator, self.n, self.seed, self.batch_size = generator, n, seed, batch_size
        self.num_classes = int(getattr(generator, "num_classes", 0) or 0)
        self.observers: list[ChunkObserver] = []
        self._cached: tuple[int, torch.Tensor] | None = None

    @property
    def num_chunks(self) -> int:
        return -(-self.n // self.batch_size)

    def labels_for(self, k: int) -> torch.Tensor | None:
        """Requested classes of chunk k, (b,), or None for an unconditional generator."""
        start, stop = k * self.batch_size, min((k + 1) * self.batch_size, self.n)
        return torch.arange(start, stop) % self.num_classes if self.num_classes else None

    def chunk(self, k: int) -> torch.Tensor:
        """Chunk k as uint8 (b, C, H, W) on the CPU."""
        if self._cached is not None and self._cached[0] == k:
            return self._cached[1]
        labels = self.labels_for(k)
        b = min(self.batch_size, self.n - k * self.batch_size)
        # A distinct, reproducible seed per chunk: 2**20 chunks per seed before two seeds could overlap.
        images = sample_images(self.generator, b, seed=self.seed * 2**20 + k, labels=labels, batch_size=b)
        for observe in self.observers:
            observe(k, images, labels)
        self._cached = (k, images)
        return images

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        image = self.chunk(i // self.batch_size)[i % self.batch_size]  # (C, H, W)
        return image.expand(3, -1, -1)


# ----------------------------------------------------------------------------- feature extractors
def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes: which weights made a set of features."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class OwnNetworkExtractor(torch_fidelity.FeatureExtractorBase):
    """A network ganops trains for itself, as a torch-fidelity extractor: `feature_extractor_weights_path` is its
    model directory (gan_core.packaging.network: JSON + safetensors), not a pickle; frozen, its weights' digest kept.
    A subclass names its loader, the message for a missing directory, and its features."""

    load: Callable[[str], torch.nn.Module]
    missing_path: str

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise UserError(self.missing_path)
        self.net = type(self).load(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.weights_sha256 = state_digest(self.net.state_dict())

    @staticmethod
    def can_be_compiled() -> bool:
        return False  # kFLOPs (lenet) to MFLOPs (simclr) per image: compiling costs more than it saves

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)


class LeNetFeatureExtractor(OwnNetworkExtractor):
    """The domain classifier (gan_core.packaging.classifier): uint8 (B, 3, H, W) → penultimate (B, 128), logits
    (B, K)."""

    load = staticmethod(load_classifier)
    missing_path = "the lenet extractor needs the classifier's model directory (gan_core.packaging.classifier)"

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("penultimate", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "penultimate", "kid": "penultimate", "prc": "penultimate"}[metric]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = dict(zip(("penultimate", "logits"), self.net.features(self.net.prepare_input(x)), strict=True))
        return tuple(features[name].float() for name in self.features_list)


class EncoderFeatureExtractor(OwnNetworkExtractor):
    """The label-free domain encoder (gan_core.evaluation.encoder): uint8 (B, 3, H, W) → features (B, D)."""

    load = staticmethod(load_encoder)
    missing_path = "the simclr extractor needs the encoder's model directory (gan_core.evaluation.encoder)"

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"fid": "features", "kid": "features", "prc": "features"}[metric]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.net(self.net.prepare_input(x)).float(),)


class SafeInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 (the `inception-v3-compat` network and numbers), its weights file read once
    with weights_only=True.

    The parent's __init__ calls torch.load(weights_only=False) on whatever it is given, so it gets an in-memory
    copy of the tensors already loaded safely here, never the file: nothing read from disk is unpickled with code.
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any):
        if feature_extractor_weights_path is None:
            raise UserError("the inception extractor needs a local weights file "
                            "(gan_core.evaluation.fidelity.inception_weights)")
        path = Path(feature_extractor_weights_path)
        verified = io.BytesIO()
        torch.save(load_inception_state(path), verified)
        verified.seek(0)
        try:
            super().__init__(name, features_list, feature_extractor_weights_path=verified, **kwargs)
        except RuntimeError as e:  # load_state_dict: missing or unexpected keys, or shapes that differ
            found = " ".join(str(e).split())  # torch puts the useful part (which keys, shapes) on line 2+
            found = found if len(found) <= 200 else found[:197] + "..."
            raise UserError(f"{path}: its tensors do not fit torch-fidelity's InceptionV3 ({found}); "
                            f"expected {_INCEPTION_FILE}") from None
        self.weights_sha256 = state_digest(self.state_dict())


for _name, _cls in ((LENET_EXTRACTOR, LeNetFeatureExtractor), (INCEPTION_EXTRACTOR, SafeInceptionV3),
                    (SIMCLR_EXTRACTOR, EncoderFeatureExtractor)):
    if _name not in FEATURE_EXTRACTORS_REGISTRY:  # the registry is global and refuses a second registration
        torch_fidelity.register_feature_extractor(_name, _cls)


@dataclass(frozen=True)
class Extractor:
    """A loaded feature extractor: our name (lenet | inception | simclr), torch-fidelity's module, where it runs."""

    name: str
    module: FeatureExtractorBase
    cuda: bool

    @property
    def weights_sha256(self) -> str:
        return self.module.weights_sha256

    def layer(self, metric: str) -> str:
        """The feature layer torch-fidelity uses for `metric` (fid, kid, prc, isc) with this extractor."""
        return self.module.get_default_feature_layer_for_metric(metric)

    @property
    def pair_layers(self) -> list[str]:
        """Layers the real set needs (FID, KID, precision/recall)."""
        return sorted({self.layer(metric) for metric in PAIR_METRICS})


def load_extractor(name: str, weights: str | Path, cuda: bool = False) -> Extractor:
    """The `name` extractor ("lenet": weights = the classifier's model directory; "simclr": the encoder's;
    "inception": the .pth file),
    producing every layer its metrics need. Raises UserError when the weights are missing or damaged."""
    cls = FEATURE_EXTRACTORS_REGISTRY[TORCH_FIDELITY_NAME[name]]
    metrics = (*PAIR_METRICS, "isc") if name == "inception" else PAIR_METRICS
    layers = sorted({cls.get_default_feature_layer_for_metric(metric) for metric in metrics})
    module = create_feature_extractor(TORCH_FIDELITY_NAME[name], layers, cuda=cuda, verbose=False,
                                      feature_extractor_weights_path=str(weights))
    return Extractor(name, module, cuda)


def extract_features(images: Dataset, extractor: Extractor, batch_size: int) -> dict[str, torch.Tensor]:
    """torch-fidelity's own feature pass over a Dataset of uint8 (3, H, W): {layer: (N, D) float32 on the CPU}."""
    # save_cpu_ram: no DataLoader worker processes (GeneratedImages samples in this process, with its observers).
    return get_featuresdict_from_dataset(images, extractor.module, batch_size, extractor.cuda, save_cpu_ram=True,
                                         verbose=False)


# ----------------------------------------------------------------------------- inception weights
_INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[1]


def inception_weights(configured: str | None) -> str:
    """A local path to torch-fidelity's Inception weights: eval.inception_weights, then the env var
    GANOPS_INCEPTION_WEIGHTS, then torch-fidelity's download cache, then a download into that cache.

    The file is only located here; load_extractor reads it (once, weights_only=True). Raises UserError, saying how
    to provide the file, when none is found and downloading fails (offline).
    """
    chosen = configured or os.environ.get(INCEPTION_WEIGHTS_ENV) or None
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            source = "eval.inception_weights" if configured else INCEPTION_WEIGHTS_ENV
            raise UserError(f"{source}={chosen!r} is not a file; point it at torch-fidelity's Inception .pth file")
        return str(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / _INCEPTION_FILE
    if cached.is_file():
        return str(cached)
    how = (
        f"set eval.inception_weights=PATH or {INCEPTION_WEIGHTS_ENV}=PATH to a local copy of {URL_INCEPTION_V3} "
        "(download it on a machine with internet), or use eval.extractors=[lenet]"
    )
    if downloads_forbidden():
        raise UserError(f"no Inception weights and {OFFLINE_ENV} forbids downloading; {how}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(cached), progress=False)
    except OSError as e:  # URLError, HTTPError, timeouts: all mean no weights
        raise UserError(f"could not download the Inception weights ({first_line(e)}); {how}") from None
    return str(cached)


def load_inception_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path`, loaded with weights_only=True: a file holding code or objects is refused."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip/OS errors vary: any failure means "not a plain state dict"
        raise UserError(f"{path}: not a PyTorch state dict of tensors ({type(e).__name__}); "
                        f"expected torch-fidelity's Inception weights {_INCEPTION_FILE}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors; expected torch-fidelity's Inception weights")
    return state


# ----------------------------------------------------------------------------- the real-feature cache
@dataclass(frozen=True)
class RealFeatures:
    """The real set's features {layer: (N, D) float32}, the cache file that holds them, and whether they came
    from it (True: no real image was read)."""

    features: dict[str, torch.Tensor]
    cache_file: Path
    cached: bool
    fid_statistics: dict[str, np.ndarray] | None = None  # {"mu", "sigma"} over all N when features hold a sample

    @property
    def count(self) -> int:
        return len(next(iter(self.features.values())))


def real_features(images: torch.Tensor | PreparedDataset, extractor: Extractor, *, data_version: str,
                  cache_dir: str | Path, batch_size: int) -> RealFeatures:
    """Features of the real images (uint8 (N, C, H, W), a tensor or a prepared dataset read a chunk at a time) in
    `extractor`'s pair layers, from ganops' cache in `cache_dir` when an entry for this data version, extractor and
    weights exists and reads back whole; otherwise computed and written there atomically. A damaged entry is ignored
    and replaced, never unpickled. Above REAL_SAMPLE images the features are those of a seeded uniform sample and
    `fid_statistics` the mean and covariance over all images, computed in one streamed pass."""
    n = len(images)
    key = json.dumps({
        "format": CACHE_FORMAT,
        "data_version": data_version,
        "extractor": TORCH_FIDELITY_NAME[extractor.name],
        "weights_sha256": extractor.weights_sha256,
        "layers": extractor.pair_layers,
        "num_images": n,
        "torch_fidelity": torch_fidelity.__version__,
        **({"sample": f"{REAL_SAMPLE} rows, default_rng(0).choice, sorted"} if n > REAL_SAMPLE else {}),
    }, sort_keys=True)
    name = f"real-{data_version.removesuffix('.dir')}-{extractor.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    path = Path(cache_dir) / f"{name}.safetensors"
    stats_names = [FID_MU, FID_SIGMA] if n > REAL_SAMPLE else []
    features = _read_cache(path, key, extractor.pair_layers + stats_names, min(n, REAL_SAMPLE))
    if features is not None:
        stats = {k: features.pop(k).numpy() for k in stats_names}
        return RealFeatures(features, path, cached=True, fid_statistics=_statistics(stats))
    if n > REAL_SAMPLE:
        features, stats = _streamed_features(images, extractor, batch_size)
    else:
        computed = extract_features(ImagesDataset(images), extractor, batch_size)
        features, stats = {layer: computed[layer] for layer in extractor.pair_layers}, {}
    try:
        with atomic_file(path) as tmp:
            tensors = {**features, **{k: torch.from_numpy(v) for k, v in stats.items()}}
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"key": key})
    except (OSError, SafetensorError) as e:  # a cache that cannot be written costs time next run, not this result
        warnings.warn(f"could not write the real-feature cache {path} ({e}); the next evaluation recomputes it",
                      stacklevel=2)
    return RealFeatures(features, path, cached=False, fid_statistics=_statistics(stats))


FID_MU, FID_SIGMA = "fid_statistics.mu", "fid_statistics.sigma"


def _statistics(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    return {"mu": stats[FID_MU], "sigma": stats[FID_SIGMA]} if stats else None


def _streamed_features(images: torch.Tensor | PreparedDataset, extractor: Extractor, batch_size: int,
                       ) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """One pass over all N images, a shard at a time: ({layer: features of the REAL_SAMPLE sampled images},
    {FID_MU, FID_SIGMA: FID's mean (float32, as torch-fidelity's) and covariance (float64) over all N})."""
    n = len(images)
    sample = np.sort(np.random.default_rng(0).choice(n, REAL_SAMPLE, replace=False))
    slot = np.full(n, -1, dtype=np.int64)
    slot[sample] = np.arange(REAL_SAMPLE)  # load index → row of the sample (-1: not sampled)
    fid_layer = extractor.layer("fid")
    kept: dict[str, torch.Tensor] = {}
    total, outer = None, None
    blocks = images.blocks() if isinstance(images, PreparedDataset) \
        else ((np.arange(i, min(i + 4096, n)), images[i:i + 4096].numpy()) for i in range(0, n, 4096))
    with torch.no_grad():
        for where, block in blocks:
            for start in range(0, len(where), batch_size):
                x = torch.from_numpy(block[start:start + batch_size]).expand(-1, 3, -1, -1).contiguous()
                if extractor.cuda:
                    x = x.cuda(non_blocking=True)
                out = extractor.module.convert_features_tuple_to_dict(extractor.module(x))
                f = out[fid_layer].cpu().double()  # (b, D)
                total = f.sum(0) if total is None else total + f.sum(0)
                outer = f.T @ f if outer is None else outer + f.T @ f
                rows = slot[where[start:start + batch_size]]
                if (rows >= 0).any():
                    for layer in extractor.pair_layers:
                        feats = out[layer].cpu().float()
                        if layer not in kept:
                            kept[layer] = torch.empty(REAL_SAMPLE, feats.shape[1])
                        kept[layer][torch.from_numpy(rows[rows >= 0])] = feats[torch.from_numpy(rows >= 0)]
    assert total is not None and outer is not None
    mu = total / n
    sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)
    return kept, {FID_MU: mu.float().numpy(), FID_SIGMA: sigma.numpy()}


def _read_cache(path: Path, key: str, layers: list[str], num_images: int) -> dict[str, torch.Tensor] | None:
    """The cached features at `path`, or None when absent, unreadable, or made for another key."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            features = {k: f.get_tensor(k) for k in f.keys()} if metadata.get("key") == key else None
    except Exception as e:  # safetensors/OS errors vary: any failure means "rebuild the entry"
        warnings.warn(f"ignoring the unreadable real-feature cache {path} ({type(e).__name__}); recomputing it",
                      stacklevel=3)
        return None
    expected = {FID_MU: (torch.float32, 1), FID_SIGMA: (torch.float64, 2)}  # else (float32, 2) of num_images rows
    whole = features is not None and sorted(features) == sorted(layers) and all(
        (t.dtype, t.dim()) == expected.get(name, (torch.float32, 2)) and (name in expected or len(t) == num_images)
        and bool(t.isfinite().all())
        for name, t in features.items()
    )
    return features if whole else None


# ----------------------------------------------------------------------------- metrics
def fidelity_metrics(
    fake: Dataset,
    real: dict[str, torch.Tensor],
    extractor: Extractor,
    *,
    batch_size: int = 200,
    kid_subset_size: int = 1000,
    seed: int = 0,
    real_fid_statistics: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """FID, KID (mean, std), precision, recall — and the Inception score for `inception` — of `fake` against the
    real features `real` ({layer: (N, D)}, from real_features or extract_features) in `extractor`'s space, named as
    in gan_core.config.metrics. The numbers are those of torch_fidelity.calculate_metrics on the same inputs (its own
    feature pass and metric functions; no cache). `kid_subset_size` must not exceed either set.
    `real_fid_statistics`: FID's real mean and covariance when `real` holds a sample (RealFeatures.fid_statistics).
    """
    generated = extract_features(fake, extractor, batch_size)
    fid_layer = extractor.layer("fid")
    # torch-fidelity's precision = share of features_1 (generated) inside the features_2 (real) manifold
    raw = {
        **fid_statistics_to_metric(fid_featuresdict_to_statistics(generated, fid_layer),
                                   real_fid_statistics or fid_featuresdict_to_statistics(real, fid_layer), False),
        **kid_featuresdict_to_metric(generated, real, extractor.layer("kid"), kid_subset_size=kid_subset_size,
                                     rng_seed=seed, verbose=False),
        **prc_featuresdict_to_metric(generated, real, extractor.layer("prc"), prc_batch_size=PRC_BATCH_SIZE,
                                     save_cpu_ram=True, verbose=False),
    }
    name = extractor.name
    out = {
        m.metric_name(m.FID, name): raw[torch_fidelity.KEY_METRIC_FID],
        m.metric_name(m.KID, name): raw[torch_fidelity.KEY_METRIC_KID_MEAN],
        m.metric_name(m.KID, name) + m.STD_SUFFIX: raw[torch_fidelity.KEY_METRIC_KID_STD],
        m.metric_name(m.PRECISION, name): raw[torch_fidelity.KEY_METRIC_PRECISION],
        m.metric_name(m.RECALL, name): raw[torch_fidelity.KEY_METRIC_RECALL],
    }
    if name == "inception":
        # ISC averages over splits of the samples: never more splits than samples (an empty split is a NaN; a
        # translator's held-out set may hold fewer than ISC_SPLITS images).
        splits = min(ISC_SPLITS, len(next(iter(generated.values()))))
        isc = isc_featuresdict_to_metric(generated, extractor.layer("isc"), rng_seed=seed, verbose=False,
                                         isc_splits=splits)
        out[m.metric_name(m.ISC, name)] = isc[torch_fidelity.KEY_METRIC_ISC_MEAN]
        out[m.metric_name(m.ISC, name) + m.STD_SUFFIX] = isc[torch_fidelity.KEY_METRIC_ISC_STD]
    return {k: float(v) for k, v in out.items()}
