"""Student image models: a timm backbone by name (any input channels) plus a projection to the teacher dim."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlkd_formats.errors import VlkdError

# Our student names -> timm model names (all created with random init by default, as in the paper).
STUDENTS = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "mobilenet_v3_small": "mobilenetv3_small_100",
    "mobilenet_v3_large": "mobilenetv3_large_100",
    "vit_b_32": "vit_base_patch32_224",
    "efficientnet_b0": "efficientnet_b0",
}
OUTPUT_STRIDES = (8, 16, 32)
DILATABLE = ("resnet", "efficientnet")  # timm backbones that take output_stride


class StudentError(VlkdError, ValueError):
    """Unknown student architecture or inconsistent student settings."""


@dataclass
class StudentConfig:
    """Student architecture: backbone name, input channels, optional ComKD EduAttention; `dense` adds a 1x1
    projection of the last feature map into the teacher's space (per-location embeddings, DualCoOp's local
    branch), computed with the backbone's `output_stride` (16: dilated last stage, a finer map). A detector
    (`head=detector`) with `image_embedding` has a second per-location embedding trained by distillation alone
    (ViLD-image), beside the one trained against the names' texts (ViLD-text); its answers ensemble the two."""

    arch: str = "resnet18"
    in_chans: int = 3
    pretrained: bool = False
    edu_attention: bool = False
    dense: bool = False
    output_stride: int = 32
    head: Literal["embedding", "detector"] = "embedding"
    fpn_dim: int = 96
    image_embedding: bool = False

    def validate(self) -> None:
        """Check the architecture name, channel count and the dense options."""
        if self.arch not in STUDENTS:
            raise StudentError(f"unknown student arch {self.arch!r}; choose one of {sorted(STUDENTS)}")
        if self.in_chans < 1:
            raise StudentError(f"student.in_chans must be >= 1, got {self.in_chans}")
        if self.output_stride not in OUTPUT_STRIDES:
            raise StudentError(f"student.output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride}")
        if self.arch.startswith("vit") and (self.dense or self.output_stride != 32):
            raise StudentError(f"student.dense and student.output_stride need a convolutional backbone, not "
                               f"{self.arch!r}")
        if self.output_stride != 32 and not self.arch.startswith(DILATABLE):
            raise StudentError(f"student.output_stride={self.output_stride} needs a backbone that can dilate its last "
                               f"stages ({', '.join(a for a in STUDENTS if a.startswith(DILATABLE))}), not {self.arch!r}")
        if self.dense and self.edu_attention:
            raise StudentError("student.dense and student.edu_attention do not combine; choose one")
        if self.head not in ("embedding", "detector"):
            raise StudentError(f"student.head must be 'embedding' or 'detector', got {self.head!r}")
        if self.head == "detector" and (self.arch.startswith("vit") or self.dense or self.edu_attention
                                        or self.output_stride != 32):
            raise StudentError("student.head=detector reads a convolutional backbone's own stride-8 and stride-16 "
                               "maps: leave student.dense, student.edu_attention and student.output_stride unset")
        if self.image_embedding and self.head != "detector":
            raise StudentError("student.image_embedding is a detector's second embedding: set student.head=detector")
        if self.fpn_dim < 8:
            raise StudentError(f"student.fpn_dim must be >= 8, got {self.fpn_dim}")


def list_students() -> list[str]:
    """Names accepted by `student.arch`."""
    return sorted(STUDENTS)


class Student(nn.Module):
    """Backbone -> pooled feature -> linear projection to `embed_dim` (-> EduAttention) -> L2 normalised: (B, D).
    A dense student returns (B, 1 + h*w, D): the global embedding, then one per feature-map location (row-major),
    all L2 normalised."""

    def __init__(self, config: StudentConfig, embed_dim: int, image_size: int):
        super().__init__()
        import timm

        config.validate()
        self.config = config
        self.edu = self.local_proj = self.detector = None
        if config.head == "detector":
            from training.detector_net import DetectorNet

            self.detector = DetectorNet(STUDENTS[config.arch], config.in_chans, embed_dim, config.fpn_dim,
                                        config.pretrained, config.image_embedding)
            return
        extra = {"img_size": image_size} if config.arch.startswith("vit") else {}
        if config.output_stride != 32:
            extra["output_stride"] = config.output_stride
        self.backbone = timm.create_model(STUDENTS[config.arch], pretrained=config.pretrained, num_classes=0,
                                          in_chans=config.in_chans, **extra)
        head_dim = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.proj = nn.Linear(head_dim, embed_dim)
        self.local_proj = nn.Conv2d(self.backbone.num_features, embed_dim, 1) if config.dense else None
        self.edu = None
        if config.edu_attention:
            from training.comkd import EduAttention

            self.token_proj = nn.Linear(self.backbone.num_features, embed_dim)
            self.edu = EduAttention(embed_dim)
            self.register_buffer("edu_text", torch.zeros(0, embed_dim))

    def set_attention_text(self, text: torch.Tensor) -> None:
        """Fix the teacher text features EduAttention queries with (the training labels' texts)."""
        if self.edu is None:
            raise StudentError("this student has no EduAttention (student.edu_attention is false)")
        self.edu_text = text.detach().to(self.proj.weight.device, self.proj.weight.dtype).clone()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings (B, embed_dim) of images (B, in_chans, H, W); dense: (B, 1 + h*w, embed_dim)."""
        if images.ndim != 4 or images.shape[1] != self.config.in_chans:
            raise StudentError(f"expected images of shape (B, {self.config.in_chans}, H, W), got {tuple(images.shape)}")
        if self.detector is not None:
            return self.detector(images)
        feats = self.backbone.forward_features(images)
        pooled = self.proj(self.backbone.forward_head(feats, pre_logits=True))
        if self.edu is not None:
            tokens = feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats
            pooled = self.edu(pooled, self.token_proj(tokens), self.edu_text)
        if self.local_proj is not None:
            local = self.local_proj(feats).flatten(2).transpose(1, 2)
            return F.normalize(torch.cat([pooled[:, None], local], 1), dim=-1)
        return F.normalize(pooled, dim=-1)
