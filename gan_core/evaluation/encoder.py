"""The label-free domain encoder: a small CNN trained contrastively (SimCLR, Chen et al. 2020) on the prepared
images, no labels needed.

    python -m gan_core encoder                          # trains, or reuses {eval.encoder.out_dir}/model
    info = train_encoder(cfg)                           # {"real_halves_fid": 0.4, "trained": True, ...}
    net = load_encoder("outputs/encoder/model")         # eval-mode Encoder, net.info = encoder.json
    net.features(uint8_images)                          # (N, feature_dim) in the simclr space

It is the offline feature extractor behind fid_simclr/kid_simclr/precision_simclr/recall_simclr (registered with
torch-fidelity in gan_core.evaluation.fidelity) and the label-free mode-collapse signal cluster_coverage_simclr:
the real features are clustered with k-means when the encoder is trained, and a generator covers a cluster when
its samples land there at least eval.coverage_min_share times as often as the real images do.

Training: each image is seen as two random views (a crop of 0.6–1 of the side, shifted by up to 15 %, and each
channel's level moved by up to ±19 grey levels); the encoder learns to tell a view's partner among the other views
of the batch (NT-Xent on a projection head that is dropped afterwards). There is no blur, noise or strong colour
augmentation, so the space stays sensitive to what a GAN gets wrong: noise, blur, colour and texture (an encoder
trained to ignore noise would not see it in FID).

The space is normalised once trained: features are centred on the real images' mean and scaled so that their total
variance is SPREAD (100). FID values are then in units of 1 % of the real data's spread, whatever the collection,
so one default gate threshold means the same on any folder.

Training is deterministic (seeded init, views, shuffles and k-means) and cached like the classifier: a model whose
encoder.json records the same data version and eval.encoder settings is reused, not retrained. Weights are
safetensors + JSON; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric

from gan_core.config import Config, EncoderConfig
from gan_core.data import load_prepared
from gan_core.data.prepared import PreparedDataset
from gan_core.data.version import data_version as read_data_version
from gan_core.device import pick_device, seeded
from gan_core.errors import UserError
from gan_core.packaging.network import WEIGHTS_FILE as WEIGHTS_FILE  # tests and readers name it here
from gan_core.packaging.network import NetworkFiles
from gan_core.preflight import ensure_writable_dir

FORMAT = "ganops-encoder/1"
ARCH = "simclr"
MODEL_DIR = "model"
SPEC_FILE = "encoder.json"
SPREAD = 100.0
"""Total variance of the real features once normalised: FID in units of 1 % of the real data's spread."""
PROJECTION_DIM = 64
"""Output of the projection head the contrastive loss is computed on (SimCLR's g(·)); dropped after training."""
TINT = 0.15
"""Largest shift of a channel's level in a training view, in [-1, 1] units (±19 of 255 grey levels)."""
KMEANS_ITERATIONS = 100
FEATURE_BATCH = 500
FIT_SAMPLE = 10_000
"""The real images the normalisation and the k-means clusters are fitted on, at most: the first of the load order,
a seeded uniform sample (as evaluation's REAL_SAMPLE; 10,000 features of 128 floats are 10 MB)."""
# Settings that change the trained weights or clusters; out_dir does not, so it is not in the cache key.
_TRAINING_FIELDS = ("epochs", "batch_size", "lr", "temperature", "width", "feature_dim", "resolution", "clusters",
                    "seed")


class Encoder(nn.Module):
    """(B, C, R, R) floats in [-1, 1] → normalised features (B, feature_dim); R is `resolution`, and
    `prepare_input` brings any uint8 image to it. Buffers hold the normalisation (center, scale) and the real
    features' k-means clusters (centroids, cluster_shares), so the weights digest covers them too."""

    def __init__(self, in_channels: int, resolution: int = 32, width: int = 16, feature_dim: int = 128,
                 clusters: int = 20):
        super().__init__()
        self.in_channels, self.resolution, self.feature_dim = in_channels, resolution, feature_dim
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 1, 1), nn.BatchNorm2d(w), nn.ReLU(),  # (B, w, R, R)
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),  # (B, 2w, R/2, R/2)
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.ReLU(),  # (B, 4w, R/4, R/4)
            nn.Conv2d(4 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.ReLU(),  # (B, 4w, R/8, R/8)
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),  # (B, 64w): keeps where things are, not only what
            nn.Linear(4 * w * 16, feature_dim),  # (B, D): the representation (SimCLR's h)
        )
        self.register_buffer("center", torch.zeros(feature_dim))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("centroids", torch.zeros(clusters, feature_dim))
        self.register_buffer("cluster_shares", torch.full((clusters,), 1.0 / clusters))

    @property
    def clusters(self) -> int:
        return int(self.centroids.shape[0])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R) → raw representation (B, D), before normalisation (what training shapes)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.embed(x) - self.center) * self.scale

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C', H, W), any C' in {1, 3} and size → float (B, C, R, R) in [-1, 1] on the model's device."""
        x = images.to(self.center.device, torch.float32)
        if x.shape[1] != self.in_channels:
            # 3 → 1: channel mean (exact for torch-fidelity's repeated grayscale); 1 → 3: repeat.
            x = x.mean(1, keepdim=True) if self.in_channels == 1 else x.expand(-1, self.in_channels, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = FEATURE_BATCH) -> torch.Tensor:
        """uint8 (N, C, H, W) → normalised features (N, D) float32 on the CPU, in batches."""
        return torch.cat([self(self.prepare_input(b)).float().cpu() for b in images.split(batch_size)])

    def nearest_cluster(self, features: torch.Tensor) -> torch.Tensor:
        """Features (N, D) → index of the nearest real-feature cluster (N,)."""
        return torch.cdist(features.float(), self.centroids.float().cpu()).argmin(1)


ENCODER = NetworkFiles("encoder", SPEC_FILE, FORMAT, Encoder, finite=True)
"""Its model directory: saved whole, loaded without unpickling, reused when whole (gan_core.packaging.network)."""


def cluster_coverage(clusters: torch.Tensor, real_shares: torch.Tensor, min_share: float) -> float:
    """The share of the real features' clusters that samples reach: cluster c counts when its share of the samples
    (`clusters`: each sample's nearest cluster, (n,)) is at least `min_share` times its share of the real images
    (`real_shares`, (K,)). A cluster no real image fell in (k-means left it empty) is not one to reach."""
    real = real_shares.double().cpu()
    share = torch.bincount(clusters.cpu(), minlength=len(real)).double() / max(len(clusters), 1)  # (K,)
    reached = share >= min_share * real
    return float(reached[real > 0].double().mean())


# ----------------------------------------------------------------------------- the stored model
def training_key(cfg: EncoderConfig, data_version: str) -> str:
    """What makes two trainings identical: the data version and the settings that shape the weights."""
    settings = {k: getattr(cfg, k) for k in _TRAINING_FIELDS}
    blob = json.dumps({"data": data_version, "settings": settings, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_dir(cfg: Config) -> Path:
    return Path(cfg.eval.encoder.out_dir) / MODEL_DIR


def stored_encoder(cfg: Config, *, data_version: str | None = None) -> dict[str, Any]:
    """The stored encoder's info (as train_encoder returns it) when it was trained on this data with these
    settings; else a UserError naming the directory and the command that trains it. Evaluation reads the encoder
    through here and never trains one: that is the encoder's own step (DVC stage, flow task)."""
    out = model_dir(cfg)
    version = data_version or read_data_version(cfg.data.prepared_dir)
    existing = ENCODER.reusable_spec(out, training_key(cfg.eval.encoder, version))
    if existing is None:
        raise UserError(f"no domain encoder for this data and eval.encoder settings in {str(out)!r}; train it "
                        "first: `python -m gan_core encoder` (the DVC stage `encoder`)")
    return {**existing, "model_dir": str(out), "trained": False}


def train_encoder(cfg: Config, *, data_version: str | None = None) -> dict[str, Any]:
    """Train the encoder on cfg.data.prepared_dir's images, or reuse the stored one trained on the same data and
    settings. Writes {eval.encoder.out_dir}/model/ (weights.safetensors + encoder.json). `data_version`: the
    prepared data's version (gan_core.data.version) when the caller hashed it already.

    Returns the model info: final_loss, real_halves_fid, cluster sizes, training key, model_dir, trained (False =
    reused)."""
    ecfg = cfg.eval.encoder
    version = data_version or read_data_version(cfg.data.prepared_dir)
    key = training_key(ecfg, version)
    out = model_dir(cfg)
    existing = ENCODER.reusable_spec(out, key)
    if existing is not None:
        return {**existing, "model_dir": str(out), "trained": False}

    prepared = load_prepared(cfg.data.prepared_dir)  # the one place the encoder reads the prepared data
    if len(prepared) < max(ecfg.clusters, 4):
        raise UserError(f"{cfg.data.prepared_dir!r} holds {len(prepared)} images: the encoder needs at least "
                        f"{max(ecfg.clusters, 4)} (eval.encoder.clusters={ecfg.clusters} clusters of the real "
                        "features); prepare more data or lower eval.encoder.clusters")
    ensure_writable_dir(ecfg.out_dir, "eval.encoder.out_dir")  # before training, not after it
    device = pick_device(cfg.eval.device, key="eval.device", auto_mps=False)
    net, stats = _fit(prepared, ecfg, device)
    spec = {
        "format": FORMAT,
        "arch": ARCH,
        "kwargs": {"in_channels": net.in_channels, "resolution": net.resolution, "width": ecfg.width,
                   "feature_dim": net.feature_dim, "clusters": net.clusters},
        **stats,
        "data_version": version,
        "data_source": prepared.meta.get("source"),
        "training_key": key,
        "settings": {k: getattr(ecfg, k) for k in _TRAINING_FIELDS},
        "trained_on": str(device),
        "torch_version": torch.__version__,
    }
    ENCODER.save(net, spec, out)
    return {**spec, "model_dir": str(out), "trained": True}


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> Encoder:
    """An eval-mode Encoder from a model directory written by train_encoder; `.info` holds encoder.json.

    Nothing is unpickled (JSON + safetensors); a missing or damaged file (or NaN weights) is a UserError naming it."""
    return ENCODER.load(path, device)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- training
def _fit(prepared: PreparedDataset, ecfg: EncoderConfig, device: torch.device) -> tuple[Encoder, dict[str, Any]]:
    """Deterministic contrastive training, then the normalisation and the k-means clusters of the real features.
    Returns (the eval-mode encoder on the CPU, what to record about it).

    Batches are read as they are needed (prepared.take: from memory for small sets, else from the shards). The
    normalisation and the clusters are taken over the first FIT_SAMPLE images of the load order (a seeded uniform
    sample; all of them up to that size), so memory stays flat however large the collection."""
    n = len(prepared)
    batch = min(ecfg.batch_size, n)
    steps_per_epoch = n // batch  # full batches only: every view has the same number of negatives
    with seeded(ecfg.seed, device):
        net = Encoder(prepared.shape[0], ecfg.resolution, ecfg.width, ecfg.feature_dim, ecfg.clusters).to(device)
        head = nn.Sequential(nn.ReLU(), nn.Linear(ecfg.feature_dim, ecfg.feature_dim), nn.ReLU(),
                             nn.Linear(ecfg.feature_dim, PROJECTION_DIM)).to(device)
        params = [*net.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=ecfg.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ecfg.lr, total_steps=ecfg.epochs * steps_per_epoch)
        views = torch.Generator().manual_seed(ecfg.seed + 1)  # on the CPU: the same draws on every device
        net.train()
        losses = []
        for _ in range(ecfg.epochs):
            order = torch.randperm(n, generator=views)
            for step in range(steps_per_epoch):
                x = net.prepare_input(prepared.take(order[step * batch:(step + 1) * batch]))  # (b, C, R, R)
                z1, z2 = (head(net.embed(random_view(x, views))) for _ in range(2))  # (b, PROJECTION_DIM) each
                loss = nt_xent(z1, z2, ecfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.detach())
        net.eval()
        with torch.no_grad():
            fitted = min(n, FIT_SAMPLE)
            raw = torch.cat([net.embed(net.prepare_input(prepared.take(rows))).double()
                             for rows in torch.arange(fitted).split(FEATURE_BATCH)])  # (fitted, D)
            spread = float(raw.var(0).sum())
            if not math.isfinite(spread) or spread <= 0:
                raise UserError(f"the encoder maps all {fitted} images to one point (feature spread {spread}); are "
                                "the images all the same? Check the prepared data")
            net.center.copy_(raw.mean(0).float())
            net.scale.fill_(math.sqrt(SPREAD / spread))
            # (fitted, D), trace(cov) = SPREAD
            normalised = ((raw - raw.mean(0)) * math.sqrt(SPREAD / spread)).float().cpu()
            centroids, assignment = kmeans(normalised, ecfg.clusters, seed=ecfg.seed)
            net.centroids.copy_(centroids)
            sizes = torch.bincount(assignment, minlength=ecfg.clusters)
            net.cluster_shares.copy_(sizes.double().div(fitted).float())
    last_epoch = torch.stack(losses[-steps_per_epoch:]).mean()
    stats = {
        "train_count": n,
        "batch_size": batch,
        "final_loss": float(last_epoch),
        "chance_loss": math.log(2 * batch - 1),  # NT-Xent of an encoder that cannot tell views apart
        "real_halves_fid": real_halves_fid(normalised, seed=ecfg.seed),
        "cluster_sizes": sizes.tolist(),
    }
    return net.cpu(), stats


def random_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random crop of each image, resized back (scale 0.6–1 of the side, centre shifted by up to 15 %), each
    channel's level shifted by up to ±TINT: (B, C, R, R) in [-1, 1].

    The tint shift takes away the easiest way to tell two images apart, a constant cast over the whole image (a
    background's shade): without it the encoder learnt little else, and ranked a GAN's checkpoints by their
    backgrounds (README, Evaluation). It is small beside the differences between colours, and there is no blur or
    noise augmentation, so colour, sharpness and noise stay visible to the features."""
    b, c = x.shape[:2]
    scale = torch.empty(b).uniform_(0.6, 1.0, generator=generator)
    shift = torch.empty(b, 2).uniform_(-0.15, 0.15, generator=generator)
    tint = torch.empty(b, c, 1, 1).uniform_(-TINT, TINT, generator=generator)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    view = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (view + tint.to(x.device)).clamp(-1.0, 1.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2b views must pick its partner among the other 2b − 1 (cosine / temperature)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2b, P)
    similarity = z @ z.t() / temperature  # (2b, 2b)
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own partner
    b = z1.shape[0]
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(similarity, partner)


def kmeans(x: torch.Tensor, k: int, seed: int,
           iterations: int = KMEANS_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded k-means++ then Lloyd's iterations on (N, D) features: (centroids (k, D), assignment (N,)). A cluster
    left empty keeps its centroid (it then simply covers nothing)."""
    generator = torch.Generator().manual_seed(seed)
    x = x.double()
    centroids = [x[int(torch.randint(len(x), (1,), generator=generator))]]
    nearest = ((x - centroids[0]) ** 2).sum(1)  # (N,) squared distance to the closest centroid so far
    for _ in range(1, k):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        centroids.append(x[int(torch.multinomial(weights, 1, generator=generator))])
        nearest = torch.minimum(nearest, ((x - centroids[-1]) ** 2).sum(1))
    c = torch.stack(centroids)  # (k, D)
    assignment = torch.cdist(x, c).argmin(1)
    for _ in range(iterations):
        counts = torch.bincount(assignment, minlength=k)  # (k,)
        sums = torch.zeros_like(c).index_add_(0, assignment, x)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
        moved = torch.cdist(x, c).argmin(1)
        if torch.equal(moved, assignment):
            break
        assignment = moved
    return c.float(), assignment


def real_halves_fid(features: torch.Tensor, seed: int) -> float:
    """FID between two random halves of the real features: the floor a perfect generator's FID sits near (it
    grows as the sample count shrinks)."""
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    half = len(features) // 2
    a, b = ({"f": features[idx].double()} for idx in (order[:half], order[half: 2 * half]))
    value = fid_statistics_to_metric(fid_featuresdict_to_statistics(a, "f"), fid_featuresdict_to_statistics(b, "f"),
                                     False)["frechet_inception_distance"]
    return float(value)
