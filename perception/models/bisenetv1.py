"""BiSeNet V1 (Yu et al., ECCV 2018): a spatial path for detail, a context path for meaning.

- Spatial path: three stride-2 conv-bn-relu layers keep a wide 1/8-resolution feature map.
- Context path: ResNet-18 features at 1/16 and 1/32, each refined by an attention refinement
  module (ARM); a global-context branch (global average pool of the 1/32 features) is added to
  the 1/32 branch; the refined features are upsampled and summed down to 1/8.
- Feature fusion module (FFM): concatenates both paths and reweights channels.
- Training adds two auxiliary heads on the context path ("aux": 16x branch, "aux2": 32x branch).

Build: ``build_model("bisenetv1", num_classes=11, aux=True, pretrained=False)``.
"""

from __future__ import annotations

import torch
from torch import nn

from perception.models import register_model
from perception.models.backbones import ResNetFeatures
from perception.models.common import ConvBNReLU, SegmentationHead, SegmentationModel, upsample_like


class SpatialPath(nn.Module):
    """Three stride-2 conv-bn-relu layers (1/8 resolution) and a 1x1 projection."""

    def __init__(self, out_channels: int = 128) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 7, stride=2)
        self.conv2 = ConvBNReLU(64, 64, 3, stride=2)
        self.conv3 = ConvBNReLU(64, 64, 3, stride=2)
        self.project = ConvBNReLU(64, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.conv3(self.conv2(self.conv1(x))))


class AttentionRefinement(nn.Module):
    """ARM: conv, then channel attention from the globally pooled features (sigmoid gate)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3)
        self.attention = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        weights = self.attention(feat.mean(dim=(2, 3), keepdim=True))  # N x C x 1 x 1
        return feat * weights


class ContextPath(nn.Module):
    """ResNet-18 with ARMs on the 1/16 and 1/32 features and a global-context branch.

    Returns ``(context_8, context_16)``: the fused context at 1/8 (16x branch, fed to the FFM)
    and the 32x branch at 1/16 (for the second auxiliary head).
    """

    def __init__(self, *, pretrained: bool | str, channels: int = 128) -> None:
        super().__init__()
        self.backbone = ResNetFeatures(
            "resnet18", pretrained=pretrained, dilated=False, model_name="bisenetv1"
        )
        _, _, c16, c32 = self.backbone.channels
        self.global_context = ConvBNReLU(c32, channels, 1)
        self.arm32 = AttentionRefinement(c32, channels)
        self.arm16 = AttentionRefinement(c16, channels)
        self.head32 = ConvBNReLU(channels, channels, 3)
        self.head16 = ConvBNReLU(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, feat8, feat16, feat32 = self.backbone(x)
        global_context = self.global_context(feat32.mean(dim=(2, 3), keepdim=True))  # N x C x 1 x 1
        branch32 = self.arm32(feat32) + global_context  # broadcast over H/32 x W/32
        context_16 = self.head32(upsample_like(branch32, feat16.shape[-2:]))
        branch16 = self.arm16(feat16) + context_16
        context_8 = self.head16(upsample_like(branch16, feat8.shape[-2:]))
        return context_8, context_16


class FeatureFusion(nn.Module):
    """FFM: concat both paths, conv-bn-relu, then a squeeze-excite style residual reweighting."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 1)
        self.attention = nn.Sequential(
            nn.Conv2d(out_channels, out_channels // 4, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels // 4, out_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.conv(torch.cat([spatial, context], dim=1))
        weights = self.attention(feat.mean(dim=(2, 3), keepdim=True))  # N x C x 1 x 1
        return feat + feat * weights


class BiSeNetV1(SegmentationModel):
    model_name = "bisenetv1"
    input_multiple = 32

    def __init__(self, *, num_classes: int, aux: bool, pretrained: bool | str) -> None:
        super().__init__()
        self.spatial_path = SpatialPath(128)
        self.context_path = ContextPath(pretrained=pretrained, channels=128)
        self.fusion = FeatureFusion(256, 256)
        self.head = SegmentationHead(256, 256, num_classes)
        # Training-only heads; names start with "aux" so deployment checkpoints may omit them.
        self.aux_head16 = SegmentationHead(128, 64, num_classes) if aux else None
        self.aux_head32 = SegmentationHead(128, 64, num_classes) if aux else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_hw = x.shape[-2:]
        spatial = self.spatial_path(x)  # N x 128 x H/8 x W/8
        context_8, context_16 = self.context_path(x)  # N x 128 x H/8 x W/8, N x 128 x H/16 x W/16
        logits = upsample_like(self.head(self.fusion(spatial, context_8)), input_hw)
        if not self.training:
            return logits
        outputs = {"out": logits}
        if self.aux_head16 is not None:
            outputs["aux"] = upsample_like(self.aux_head16(context_8), input_hw)
            outputs["aux2"] = upsample_like(self.aux_head32(context_16), input_hw)
        return outputs


@register_model("bisenetv1")
def build_bisenetv1(*, num_classes: int, aux: bool = True, pretrained: bool | str = False) -> BiSeNetV1:
    """BiSeNet V1 on ResNet-18.

    Args:
        num_classes: classifier outputs.
        aux: add the two auxiliary context-path heads ("aux", "aux2") used in training.
        pretrained: False, True (torchvision's resnet18 file from the local hub cache) or a local
            .pth path of a torchvision resnet18 state dict.

    Raises:
        ConfigError: pretrained weights file missing. ModelError: unreadable / ill-fitting file.
    """
    return BiSeNetV1(num_classes=num_classes, aux=aux, pretrained=pretrained)
