"""The domain classifier's network: a small LeNet-5 with batch norm. It is the offline feature extractor of
evaluation (gan_core.evaluation.fidelity's lenet) and, frozen, the judge of cyclegan's semantic-consistency term.

    net = LeNet(in_channels=1, num_classes=10, resolution=32)
    features, logits = net.features(x)          # x: (B, C, 32, 32) in [-1, 1] → (B, 128), (B, 10)
    net.predict(uint8_images)                   # uint8 (B, C, H, W), any size → class ids (B,)
    net.classify(images)                        # float (B, C, H, W) in [-1, 1], any size → logits (B, 10), with
                                                # gradients to the images (a training loss may go through it)

Its package (safetensors + classifier.json) and loader are gan_core.packaging.classifier's; its training,
gan_core.evaluation.classifier's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """LeNet-5 with batch norm: (B, C, R, R) floats in [-1, 1] → penultimate features (B, 128) and logits (B, K).

    R is `resolution` (32 by default); `prepare_input` brings any uint8 image to it, `classify` any float image.
    """

    feature_dim = 128

    def __init__(self, in_channels: int, num_classes: int, resolution: int = 32, widths: tuple[int, int] = (16, 32)):
        super().__init__()
        self.in_channels, self.num_classes, self.resolution = in_channels, num_classes, resolution
        w1, w2 = widths
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w1, 5, padding=2), nn.BatchNorm2d(w1), nn.ReLU(),  # (B, w1, R, R)
            nn.MaxPool2d(2),  # (B, w1, R/2, R/2)
            nn.Conv2d(w1, w2, 5), nn.BatchNorm2d(w2), nn.ReLU(), nn.MaxPool2d(2),  # (B, w2, R/4 - 2, R/4 - 2)
            nn.AdaptiveAvgPool2d(6), nn.Flatten(),  # (B, w2*36); identity pooling at R = 32, any R works
            nn.Linear(w2 * 36, self.feature_dim), nn.ReLU(),  # (B, 128): the FID feature space
        )
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, R, R) in [-1, 1] → (penultimate (B, 128), logits (B, K))."""
        penultimate = self.body(x)
        return penultimate, self.head(penultimate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]

    def fit_input(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, C', H, W), C' in {1, 3}, any size → (B, C, R, R): channels matched, resized (antialiased when
        shrinking, as `prepare` resizes). Differentiable, and linear in x, so it commutes with any rescaling."""
        if x.shape[1] != self.in_channels:
            # 3 → 1: channel mean (exact for torch-fidelity's repeated grayscale); 1 → 3: repeat.
            x = x.mean(1, keepdim=True) if self.in_channels == 1 else x.expand(-1, self.in_channels, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return x

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C', H, W), any C' in {1, 3} and size → float (B, C, R, R) in [-1, 1] on the model's device."""
        x = images.to(next(self.parameters()).device, torch.float32)
        return self.fit_input(x) / 127.5 - 1.0

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, C', H, W) in [-1, 1], any size → logits (B, K); gradients flow to x."""
        return self(self.fit_input(x))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → predicted class (B,) on the CPU."""
        return self(self.prepare_input(images)).argmax(1).cpu()
