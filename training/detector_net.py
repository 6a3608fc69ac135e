"""The grasp detector's network: a convolutional backbone's stride-8 and stride-16 maps, a light feature pyramid
(the stride-16 map upsampled onto the stride-8 one), and per-location heads: class-agnostic detection channels
(objectness, free to grasp, visible fraction, something rests on it, centre offset, box) and an L2-normalised
embedding in the teacher's space, and optionally a second one trained by distillation alone (ViLD's image head).
Output (B, L, FIELDS + D) (or FIELDS + 2D: the text-trained embedding, then the distilled one), L = (input / 8)^2
locations in row-major order, the layout `vlkd_runtime.scoring.DetectorScorer` reads."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlkd_runtime.scoring import FIELDS

STRIDES = (8, 16)  # the backbone levels the pyramid reads
OBJECTNESS_PRIOR = 0.01  # the objectness head starts at this probability (CenterNet's focal-loss start)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DetectorNet(nn.Module):
    """Backbone (timm, features only, up to its stride-16 stage) -> pyramid at stride 8 -> detection channels and
    embeddings per location."""

    def __init__(self, arch: str, in_chans: int, embed_dim: int, fpn_dim: int = 96, pretrained: bool = False,
                 image_embedding: bool = False):
        super().__init__()
        import timm

        probe = timm.create_model(arch, pretrained=False, features_only=True, in_chans=in_chans)
        reductions = probe.feature_info.reduction()
        missing = [s for s in STRIDES if s not in reductions]
        if missing:
            raise ValueError(f"backbone {arch!r} has no feature level at stride(s) {missing} (it has {reductions})")
        indices = [reductions.index(s) for s in STRIDES]
        del probe
        self.backbone = timm.create_model(arch, pretrained=pretrained, features_only=True, in_chans=in_chans,
                                          out_indices=indices)
        c8, c16 = self.backbone.feature_info.channels()
        self.lateral8, self.lateral16 = nn.Conv2d(c8, fpn_dim, 1), nn.Conv2d(c16, fpn_dim, 1)
        self.smooth = _conv(fpn_dim, fpn_dim)
        self.detect = nn.Sequential(_conv(fpn_dim, fpn_dim), nn.Conv2d(fpn_dim, FIELDS, 1))
        self.embed = nn.Sequential(_conv(fpn_dim, fpn_dim), nn.Conv2d(fpn_dim, embed_dim, 1))
        self.embed_image = (nn.Sequential(_conv(fpn_dim, fpn_dim), nn.Conv2d(fpn_dim, embed_dim, 1))
                            if image_embedding else None)
        with torch.no_grad():
            self.detect[-1].bias.zero_()
            self.detect[-1].bias[0] = -math.log((1 - OBJECTNESS_PRIOR) / OBJECTNESS_PRIOR)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, L, FIELDS + D): raw logits of objectness, free, visible, supports; centre offset dx, dy in cells
        (within +-0.5); box sides in fractions of the input (>= 0); then the normalised embedding (and the
        normalised distilled one: FIELDS + 2D)."""
        f8, f16 = self.backbone(images)
        p = self.lateral8(f8) + F.interpolate(self.lateral16(f16), size=f8.shape[-2:], mode="nearest")
        p = self.smooth(p)
        raw = self.detect(p)
        offset = 0.5 * torch.tanh(raw[:, 4:6])
        sides = F.softplus(raw[:, 6:10]) * 0.1
        emb = [F.normalize(self.embed(p), dim=1)]
        if self.embed_image is not None:
            emb.append(F.normalize(self.embed_image(p), dim=1))
        out = torch.cat([raw[:, :4], offset, sides, *emb], 1)
        return out.flatten(2).transpose(1, 2)
