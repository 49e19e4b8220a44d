"""torch-fidelity glue: our feature extractors, Dataset wrappers, and one call that returns our metric names.

    real = ImagesDataset(prepared.images)                       # uint8 (N, C, H, W) → items uint8 (3, H, W)
    fake = GeneratedImages(G, 2000, seed=1234, batch_size=200)  # streamed: one batch of images in memory at a time
    fidelity_metrics(fake, real, "lenet", real_cache_name="real-<hash>-...", cache_dir="outputs/cache",
                     weights="outputs/classifier/model")
    # → {"fid_lenet": .., "kid_lenet": .., "kid_lenet_std": .., "precision_lenet": .., "recall_lenet": ..}

Facts about torch-fidelity 0.4 this module is built around:
- A Dataset input must yield uint8 (3, H, W) tensors: grayscale is repeated to 3 channels here.
- Only inputs with an `input{1,2}_cache_name` are cached; the real input's name carries the data content hash,
  the extractor and its weights, so changed data or a retrained classifier never hit a stale cache.
- Its generator wrapper draws class labels with `np.int` (gone from NumPy), so generated samples go in as a
  Dataset (GeneratedImages), which also keeps sampling on our seed and our `sample_images`.
- The extractor is created by name from its registry: `ganops-lenet` is registered here; `inception-v3-compat`
  ships with it and reads `feature_extractor_weights_path` (a local file, for machines with no internet).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from gan_core import metrics as m
from gan_core.classifier import load_classifier
from gan_core.errors import UserError
from gan_core.package import sample_images

LENET_EXTRACTOR = "ganops-lenet"
INCEPTION_EXTRACTOR = "inception-v3-compat"
TORCH_FIDELITY_NAME = {"lenet": LENET_EXTRACTOR, "inception": INCEPTION_EXTRACTOR}
INCEPTION_WEIGHTS_ENV = "GANOPS_INCEPTION_WEIGHTS"
OFFLINE_ENV = "GANOPS_OFFLINE"
"""Set to 1 to never try downloading the Inception weights (air-gapped machines fail at once, with directions)."""


# ----------------------------------------------------------------------------- datasets
class ImagesDataset(Dataset):
    """uint8 images (N, C, H, W), C in {1, 3} → items uint8 (3, H, W), the form torch-fidelity takes.

    `reads` counts items served: it stays 0 when torch-fidelity answers from its feature cache.
    """

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {list(images.shape)}")
        self.images = images
        self.reads = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        self.reads += 1
        return self.images[i].expand(3, -1, -1)  # (3, H, W); a view, no copy for grayscale


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


# ----------------------------------------------------------------------------- the domain extractor
class LeNetFeatureExtractor(torch_fidelity.FeatureExtractorBase):
    """The domain classifier as a torch-fidelity extractor: uint8 (B, 3, H, W) → penultimate (B, 128), logits (B, K).

    `feature_extractor_weights_path` is the classifier's model directory (gan_core.classifier), not a pickle.
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise UserError("the lenet extractor needs the classifier's model directory (gan_core.classifier)")
        self.net = load_classifier(feature_extractor_weights_path)
        self.requires_grad_(False)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("penultimate", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "penultimate", "kid": "penultimate", "prc": "penultimate"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False  # a few kFLOPs per image: compiling costs more than it saves

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = dict(zip(("penultimate", "logits"), self.net.features(self.net.prepare_input(x)), strict=True))
        return tuple(features[name].float() for name in self.features_list)


if LENET_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:  # the registry is global and refuses a second registration
    torch_fidelity.register_feature_extractor(LENET_EXTRACTOR, LeNetFeatureExtractor)


# ----------------------------------------------------------------------------- inception weights
def inception_weights(configured: str | None) -> str:
    """A verified local path to torch-fidelity's Inception weights: eval.inception_weights, then the env var
    GANOPS_INCEPTION_WEIGHTS, then torch-fidelity's download cache, then a download into that cache.

    Raises UserError, saying how to provide the file, when none is found and downloading fails (offline).
    """
    chosen = configured or os.environ.get(INCEPTION_WEIGHTS_ENV) or None
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            source = "eval.inception_weights" if configured else INCEPTION_WEIGHTS_ENV
            raise UserError(f"{source}={chosen!r} is not a file; point it at torch-fidelity's Inception .pth file")
        return _verified_state_dict_file(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1]
    if cached.is_file():
        return _verified_state_dict_file(cached)
    how = (
        f"set eval.inception_weights=PATH or {INCEPTION_WEIGHTS_ENV}=PATH to a local copy of {URL_INCEPTION_V3} "
        "(download it on a machine with internet), or use eval.extractors=[lenet]"
    )
    if os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes"):
        raise UserError(f"no Inception weights and {OFFLINE_ENV} forbids downloading; {how}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(cached), progress=False)
    except OSError as e:  # URLError, HTTPError, timeouts: all mean no weights
        raise UserError(f"could not download the Inception weights ({str(e).splitlines()[0]}); {how}") from None
    return _verified_state_dict_file(cached)


def _verified_state_dict_file(path: Path) -> str:
    """Check that `path` holds only tensors (weights_only=True) before torch-fidelity loads it.

    torch-fidelity itself calls torch.load(weights_only=False); a file that passes this check has no code in it.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors vary: any failure means "not a plain state dict"
        raise UserError(f"{path}: not a PyTorch state dict of tensors ({type(e).__name__}); expected torch-fidelity's "
                        f"Inception weights {URL_INCEPTION_V3.rsplit('/', 1)[1]}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors; expected torch-fidelity's Inception weights")
    return str(path)


# ----------------------------------------------------------------------------- metrics
def fidelity_metrics(
    fake: Dataset,
    real: Dataset,
    extractor: str,
    *,
    weights: str,
    real_cache_name: str | None,
    cache_dir: str | Path,
    batch_size: int = 200,
    kid_subset_size: int = 1000,
    seed: int = 0,
    cuda: bool = False,
) -> dict[str, float]:
    """FID, KID (mean, std), precision, recall — and the Inception score for `inception` — of `fake` against
    `real` in the feature space of `extractor` ("lenet" or "inception"), named as in gan_core.metrics.

    `weights`: the classifier model directory (lenet) or the Inception .pth file. The real input's features are
    cached under `cache_dir` as `real_cache_name` (None: not cached). `kid_subset_size` must not exceed either set.
    """
    raw = torch_fidelity.calculate_metrics(
        input1=fake,  # torch-fidelity's precision = share of input1 (generated) inside the input2 (real) manifold
        input2=real,
        input2_cache_name=real_cache_name,
        cache_root=str(cache_dir),
        cache=real_cache_name is not None,
        feature_extractor=TORCH_FIDELITY_NAME[extractor],
        feature_extractor_weights_path=weights,
        fid=True,
        kid=True,
        prc=True,
        isc=extractor == "inception",
        kid_subset_size=kid_subset_size,
        batch_size=batch_size,
        rng_seed=seed,
        cuda=cuda,
        # save_cpu_ram: no DataLoader worker processes (GeneratedImages samples in this process, with its
        # observers) and precision/recall in row blocks instead of one full distance matrix.
        save_cpu_ram=True,
        # Precision/recall hold a (prc_batch_size, N) distance block: torch-fidelity's 10,000 rows made peak
        # memory grow from 1.3 GB (5k samples) to 3.8 GB (20k); 1,000 rows keep the block at 4 kB × N.
        prc_batch_size=1000,
        verbose=False,
    )
    out = {
        m.metric_name(m.FID, extractor): raw[torch_fidelity.KEY_METRIC_FID],
        m.metric_name(m.KID, extractor): raw[torch_fidelity.KEY_METRIC_KID_MEAN],
        m.metric_name(m.KID, extractor) + m.STD_SUFFIX: raw[torch_fidelity.KEY_METRIC_KID_STD],
        m.metric_name(m.PRECISION, extractor): raw[torch_fidelity.KEY_METRIC_PRECISION],
        m.metric_name(m.RECALL, extractor): raw[torch_fidelity.KEY_METRIC_RECALL],
    }
    if extractor == "inception":
        out[m.metric_name(m.ISC, extractor)] = raw[torch_fidelity.KEY_METRIC_ISC_MEAN]
        out[m.metric_name(m.ISC, extractor) + m.STD_SUFFIX] = raw[torch_fidelity.KEY_METRIC_ISC_STD]
    return {k: float(v) for k, v in out.items()}
