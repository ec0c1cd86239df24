"""PSPNet (Zhao et al., CVPR 2017): a dilated ResNet and a pyramid pooling module.

- Backbone: torchvision ResNet-18 or ResNet-50 with layer3 / layer4 dilated (output stride 8).
- Pyramid pooling module (PPM): average-pool the 1/8 features into 1x1, 2x2, 3x3 and 6x6 bins,
  reduce each with a 1x1 conv, upsample back, concatenate with the features.
- Training adds an auxiliary head on layer3 ("aux").

Export-friendly pooling: adaptive average pooling with output size b over a length-L axis averages
the window ``[floor(i*L/b), ceil((i+1)*L/b))`` for bin i. Here that is computed exactly as two
matrix products with constant averaging matrices built from the (static) feature size, so the ONNX
graph holds MatMul, never a dynamic AdaptiveAvgPool, for every input size (e.g. 360x480, whose
45x60 feature map is not divisible by 2 or 6). The only input rule is the stride: H, W multiples of 8.

Build: ``build_model("pspnet", num_classes=11, backbone="resnet18", aux=True)``.
"""

from __future__ import annotations

import torch
from torch import nn

from perception.errors import ConfigError
from perception.models import register_model
from perception.models.backbones import RESNET_WEIGHTS, ResNetFeatures
from perception.models.common import ConvBNReLU, SegmentationHead, SegmentationModel, upsample_like

#: Pyramid bins of the paper.
PYRAMID_BINS = (1, 2, 3, 6)
#: Hidden width of the main head per backbone (the paper's 512 for ResNet-50, half for ResNet-18).
HEAD_CHANNELS = {"resnet18": 256, "resnet50": 512}


def adaptive_pool_matrix(in_size: int, bins: int, *, like: torch.Tensor) -> torch.Tensor:
    """bins x in_size matrix whose product with an axis equals adaptive average pooling of that axis.

    Row i averages positions ``[floor(i*in_size/bins), ceil((i+1)*in_size/bins))``, the window rule
    of ``torch.nn.functional.adaptive_avg_pool2d``. Built with tensor ops (not Python loops) so the
    legacy TorchScript exporter traces it without warnings and folds it to a constant.
    """
    positions = torch.arange(in_size, device=like.device)
    index = torch.arange(bins, device=like.device)
    start = (index * in_size) // bins  # bins
    end = ((index + 1) * in_size + bins - 1) // bins  # bins
    inside = (positions.unsqueeze(0) >= start.unsqueeze(1)) & (positions.unsqueeze(0) < end.unsqueeze(1))
    return inside.to(like.dtype) / (end - start).unsqueeze(1).to(like.dtype)


def adaptive_avg_pool_exact(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` as MatMuls with constant matrices: N x C x H x W -> N x C x b x b."""
    height, width = x.shape[-2:]
    rows = adaptive_pool_matrix(height, bins, like=x)  # b x H
    cols = adaptive_pool_matrix(width, bins, like=x)  # b x W
    return rows @ x @ cols.transpose(0, 1)  # (b x H) @ (N x C x H x W) @ (W x b) -> N x C x b x b


class PyramidPooling(nn.Module):
    """PPM: pooled bins -> 1x1 conv-bn-relu (C/4 each) -> bilinear upsample -> concat with the input."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = PYRAMID_BINS) -> None:
        super().__init__()
        self.bins = bins
        self.reduce = nn.ModuleList(ConvBNReLU(in_channels, in_channels // len(bins), 1) for _ in bins)
        self.out_channels = in_channels + len(bins) * (in_channels // len(bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature_hw = x.shape[-2:]
        pyramid = [x]
        for bins, reduce in zip(self.bins, self.reduce, strict=True):
            pyramid.append(upsample_like(reduce(adaptive_avg_pool_exact(x, bins)), feature_hw))
        return torch.cat(pyramid, dim=1)  # N x (C + 4 * C/4) x H/8 x W/8


class PSPNet(SegmentationModel):
    model_name = "pspnet"
    input_multiple = 8

    def __init__(self, *, num_classes: int, backbone: str, aux: bool, pretrained: bool | str) -> None:
        super().__init__()
        self.backbone = ResNetFeatures(backbone, pretrained=pretrained, dilated=True, model_name="pspnet")
        _, _, c4, c5 = self.backbone.channels
        self.pyramid = PyramidPooling(c5)
        self.head = SegmentationHead(self.pyramid.out_channels, HEAD_CHANNELS[backbone], num_classes)
        # Training-only head; its name starts with "aux" so deployment checkpoints may omit it.
        self.aux_head = SegmentationHead(c4, 256, num_classes) if aux else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_hw = x.shape[-2:]
        _, _, feat_layer3, feat_layer4 = self.backbone(x)  # both at H/8 x W/8 (dilated)
        logits = upsample_like(self.head(self.pyramid(feat_layer4)), input_hw)
        if not self.training:
            return logits
        outputs = {"out": logits}
        if self.aux_head is not None:
            outputs["aux"] = upsample_like(self.aux_head(feat_layer3), input_hw)
        return outputs


@register_model("pspnet")
def build_pspnet(
    *, num_classes: int, backbone: str = "resnet50", aux: bool = True, pretrained: bool | str = False
) -> PSPNet:
    """PSPNet on a dilated ResNet (output stride 8).

    Args:
        num_classes: classifier outputs.
        backbone: ``"resnet18"`` or ``"resnet50"`` (the paper's family; much slower).
        aux: add the auxiliary head on layer3 ("aux") used in training.
        pretrained: False, True (torchvision's file for ``backbone`` from the local hub cache) or
            a local .pth path of a torchvision ResNet state dict.

    Raises:
        ConfigError: unknown backbone or missing weights file. ModelError: unreadable / ill-fitting file.

    Training with batch size 1 fails in BatchNorm after the 1x1 pyramid bin (one value per channel);
    use batches of 2 or more.
    """
    if backbone not in RESNET_WEIGHTS:
        raise ConfigError(f"pspnet: unknown backbone {backbone!r}; known: {', '.join(RESNET_WEIGHTS)}")
    return PSPNet(num_classes=num_classes, backbone=backbone, aux=aux, pretrained=pretrained)
