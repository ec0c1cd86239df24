"""BiSeNet V2 (Yu et al., IJCV 2021): a wide shallow detail branch and a narrow deep semantic branch.

- Detail branch: three stages of plain 3x3 conv-bn-relu, 1/8 resolution, C = 64, 64, 128.
- Semantic branch: stem block (1/4), gather-and-expand (GE) layers (1/8, 1/16, 1/32) with
  lambda = 1/4 of the detail width, and a context embedding (CE) block of global context.
- Bilateral guided aggregation (BGA): each branch gates the other at its own resolution.
- Training adds booster heads on the semantic stages: "aux" (stem, 1/4), "aux2" (1/8),
  "aux3" (1/16), "aux4" (1/32, before the CE block).

``width`` scales every channel count (1.0 = the paper; 0.5 is the light CPU variant) and
``head_channels`` the hidden width of the main segmentation head (default 1024 * width).

Build: ``build_model("bisenetv2", num_classes=11, aux=True, width=0.5)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from perception.errors import ConfigError
from perception.models import register_model
from perception.models.backbones import check_no_pretrained
from perception.models.common import (
    ConvBNReLU,
    SegmentationHead,
    SegmentationModel,
    check_width,
    scaled_channels,
    upsample_like,
)

#: GE layers' depthwise expansion ratio (the paper's epsilon).
EXPANSION = 6


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1):
    return ConvBNReLU(in_channels, out_channels, kernel_size, stride=stride, groups=groups, relu=False)


class DetailBranch(nn.Sequential):
    """Three stages of 3x3 conv-bn-relu, each starting with stride 2: C1, C1, C2 channels at 1/8."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__(
            ConvBNReLU(3, c1, 3, stride=2),
            ConvBNReLU(c1, c1, 3),
            ConvBNReLU(c1, c1, 3, stride=2),
            ConvBNReLU(c1, c1, 3),
            ConvBNReLU(c1, c1, 3),
            ConvBNReLU(c1, c2, 3, stride=2),
            ConvBNReLU(c2, c2, 3),
            ConvBNReLU(c2, c2, 3),
        )


class StemBlock(nn.Module):
    """Stride-4 stem: a stride-2 conv, then a conv path and a max-pool path, concatenated and fused."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(3, out_channels, 3, stride=2)
        self.left = nn.Sequential(
            ConvBNReLU(out_channels, out_channels // 2, 1),
            ConvBNReLU(out_channels // 2, out_channels, 3, stride=2),
        )
        self.right = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GatherExpand(nn.Module):
    """GE layer: 3x3 conv gathers, depthwise 3x3 expands by 6 (stride 2: twice), 1x1 projects back.

    Stride 2 adds a depthwise-separable shortcut; stride 1 uses the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        mid = in_channels * EXPANSION
        self.gather = ConvBNReLU(in_channels, in_channels, 3)
        expand: list[nn.Module] = [_conv_bn(in_channels, mid, 3, stride=stride, groups=in_channels)]
        if stride == 2:
            expand.append(_conv_bn(mid, mid, 3, groups=mid))
        self.expand = nn.Sequential(*expand)
        self.project = _conv_bn(mid, out_channels, 1)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                _conv_bn(in_channels, in_channels, 3, stride=stride, groups=in_channels),
                _conv_bn(in_channels, out_channels, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(self.expand(self.gather(x))) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """CE block: global average pool -> BN -> 1x1 conv-bn-relu, added back, then a 3x3 conv-bn-relu."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool_bn = nn.BatchNorm2d(channels)
        self.embed = ConvBNReLU(channels, channels, 1)
        self.fuse = ConvBNReLU(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.embed(self.pool_bn(x.mean(dim=(2, 3), keepdim=True)))  # N x C x 1 x 1
        return self.fuse(x + context)


class SemanticBranch(nn.Module):
    """Stem (1/4), GE stages at 1/8, 1/16, 1/32, CE block; returns every stage for the booster heads."""

    def __init__(self, channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        c_stem, c8, c16, c32 = channels
        self.stem = StemBlock(c_stem)
        self.stage8 = nn.Sequential(GatherExpand(c_stem, c8, stride=2), GatherExpand(c8, c8, stride=1))
        self.stage16 = nn.Sequential(GatherExpand(c8, c16, stride=2), GatherExpand(c16, c16, stride=1))
        self.stage32 = nn.Sequential(
            GatherExpand(c16, c32, stride=2),
            GatherExpand(c32, c32, stride=1),
            GatherExpand(c32, c32, stride=1),
            GatherExpand(c32, c32, stride=1),
        )
        self.context = ContextEmbedding(c32)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feat4 = self.stem(x)
        feat8 = self.stage8(feat4)
        feat16 = self.stage16(feat8)
        feat32 = self.stage32(feat16)
        return feat4, feat8, feat16, feat32, self.context(feat32)


class BilateralGuidedAggregation(nn.Module):
    """BGA: the semantic features gate the detail features at 1/8, the detail gate the semantic at 1/32."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(
            _conv_bn(channels, channels, 3, groups=channels), nn.Conv2d(channels, channels, 1, bias=False)
        )
        self.detail_down = nn.Sequential(
            _conv_bn(channels, channels, 3, stride=2), nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=False)
        )
        self.semantic_up = _conv_bn(channels, channels, 3)
        self.semantic_keep = nn.Sequential(
            _conv_bn(channels, channels, 3, groups=channels), nn.Conv2d(channels, channels, 1, bias=False)
        )
        self.fuse = _conv_bn(channels, channels, 3)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        detail_hw = detail.shape[-2:]
        semantic_gate_8 = torch.sigmoid(upsample_like(self.semantic_up(semantic), detail_hw))  # 1/32 -> 1/8
        at_8 = self.detail_keep(detail) * semantic_gate_8
        at_32 = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))  # N x C x H/32 x W/32
        return F.relu(self.fuse(at_8 + upsample_like(at_32, detail_hw)))


class BiSeNetV2(SegmentationModel):
    model_name = "bisenetv2"
    input_multiple = 32

    def __init__(self, *, num_classes: int, aux: bool, width: float, head_channels: int) -> None:
        super().__init__()
        c1, c2 = scaled_channels(64, width), scaled_channels(128, width)
        # lambda = 1/4: the semantic stem is a quarter of C1; its 1/32 stage meets the detail
        # branch's C2 in the BGA, which needs equal widths.
        semantic = (scaled_channels(16, width), scaled_channels(32, width), scaled_channels(64, width), c2)
        self.detail = DetailBranch(c1, c2)
        self.semantic = SemanticBranch(semantic)
        self.aggregation = BilateralGuidedAggregation(c2)
        self.head = SegmentationHead(c2, head_channels, num_classes)
        # Booster heads, training only; names start with "aux" so deployment checkpoints may omit them.
        booster_mid = scaled_channels(128, width)
        self.aux_heads = (
            nn.ModuleList(SegmentationHead(c, booster_mid, num_classes) for c in semantic) if aux else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_hw = x.shape[-2:]
        detail = self.detail(x)  # N x C2 x H/8 x W/8
        feat4, feat8, feat16, feat32, context = self.semantic(x)  # ..., N x C2 x H/32 x W/32
        logits = upsample_like(self.head(self.aggregation(detail, context)), input_hw)
        if not self.training:
            return logits
        outputs = {"out": logits}
        if self.aux_heads is not None:
            boosted = zip(
                ("aux", "aux2", "aux3", "aux4"), self.aux_heads, (feat4, feat8, feat16, feat32), strict=True
            )
            for name, head, feat in boosted:
                outputs[name] = upsample_like(head(feat), input_hw)
        return outputs


@register_model("bisenetv2")
def build_bisenetv2(
    *,
    num_classes: int,
    aux: bool = True,
    width: float = 1.0,
    head_channels: int | None = None,
    pretrained: bool | str = False,
) -> BiSeNetV2:
    """BiSeNet V2 (trained from scratch, as in the paper).

    Args:
        num_classes: classifier outputs.
        aux: add the four booster heads ("aux".."aux4") used in training.
        width: channel multiplier; 1.0 = the paper, 0.5 = light CPU variant.
        head_channels: hidden width of the main head (default: 1024 * width, the paper's 1024).
        pretrained: must be False; BiSeNet V2 has no ImageNet backbone.

    Raises:
        ConfigError: bad width / head_channels, or pretrained set.
    """
    check_width(width, model_name="bisenetv2")
    check_no_pretrained(pretrained, model_name="bisenetv2")
    if head_channels is None:
        head_channels = scaled_channels(1024, width)
    if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 1:
        raise ConfigError(f"bisenetv2: head_channels={head_channels!r} must be a positive integer")
    return BiSeNetV2(num_classes=num_classes, aux=aux, width=width, head_channels=head_channels)
