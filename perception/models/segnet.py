"""SegNet (Badrinarayanan et al., TPAMI 2017) and its SegNet-Basic variant.

An encoder of conv-bn-relu stages, each ending in a 2x2 max-pool that remembers where each
maximum came from (the "pooling switches"); a mirrored decoder that puts features back at those
positions (unpooling, no skip concatenation) and densifies them with convolutions; a classifier.

Two interchangeable unpooling implementations, selected with ``unpool=``:

- ``"indices"`` (training default): ``F.max_pool2d(return_indices=True)`` + ``F.max_unpool2d``.
- ``"mask"`` (export): the pooling window's position of the first maximum as a one-hot mask over
  the four window cells, applied to the nearest-upsampled decoder features. Exported with only
  DepthToSpace/SpaceToDepth, ReduceMax, Equal, And/Not and Mul, so neither MaxUnpool nor an
  indices output reach the ONNX graph (TensorRT supports neither).

The two are numerically identical, ties included: on a tie inside a window (common after ReLU:
a window of zeros) ``max_pool2d`` keeps the first maximum in row-major order, and the mask keeps
the same one. ``prepare_for_export()`` switches a model to ``"mask"``; the weights do not change.

Build: ``build_model("segnet", num_classes=11, width=0.25)`` or ``build_model("segnet_basic", ...)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import VGG16_BN_Weights

from perception.errors import ConfigError
from perception.models import register_model
from perception.models.backbones import check_no_pretrained, load_into, load_pretrained_state
from perception.models.common import ConvBNReLU, SegmentationModel, check_width, scaled_channels

UnpoolMode = Literal["indices", "mask"]
UNPOOL_MODES = ("indices", "mask")

#: VGG16 channel widths and convolutions per stage (13 convolutions in 5 stages).
VGG16_STAGE_CHANNELS = (64, 128, 256, 512, 512)
VGG16_STAGE_CONVS = (2, 2, 3, 3, 3)


def max_pool_2x(x: torch.Tensor, *, mode: UnpoolMode) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 / stride-2 max-pool that also returns the switches needed to unpool.

    Returns ``(pooled, switches)``: for ``"indices"`` the flat argmax indices of
    ``F.max_pool2d``; for ``"mask"`` a bool one-hot N x C x 4 x H/2 x W/2 marking, in each
    window, the first cell (row-major) that holds the maximum.
    """
    if mode == "indices":
        return F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
    # N x C x H x W -> N x 4C x H/2 x W/2 -> N x C x 4 x H/2 x W/2; cells (0,0), (0,1), (1,0), (1,1)
    cells = F.pixel_unshuffle(x, 2).unflatten(1, (x.shape[1], 4))
    pooled = cells.amax(dim=2)  # N x C x H/2 x W/2, equal to F.max_pool2d(x, 2, 2)
    is_max = cells == pooled.unsqueeze(2)
    # Keep only the first maximum per window, the cell max_pool2d's index points at on ties.
    top_left, top_right, bottom_left, bottom_right = is_max.unbind(dim=2)
    taken = top_left
    first = [top_left]
    for cell in (top_right, bottom_left, bottom_right):
        first.append(cell & ~taken)
        taken = taken | cell
    return pooled, torch.stack(first, dim=2)


def max_unpool_2x(x: torch.Tensor, switches: torch.Tensor, *, mode: UnpoolMode) -> torch.Tensor:
    """Inverse of ``max_pool_2x``: N x C x h x w -> N x C x 2h x 2w, zeros off the switch positions."""
    if mode == "indices":
        return F.max_unpool2d(x, switches, kernel_size=2, stride=2)
    # N x C x 1 x h x w * N x C x 4 x h x w -> N x (C*4) x h x w -> N x C x 2h x 2w
    cells = x.unsqueeze(2) * switches.to(x.dtype)
    return F.pixel_shuffle(cells.flatten(1, 2), 2)


class EncoderStage(nn.Sequential):
    """conv-bn-relu x n; the max-pool that follows is applied by the model (it keeps switches)."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int, *, kernel_size: int, bias: bool):
        convs = [
            ConvBNReLU(in_channels if i == 0 else out_channels, out_channels, kernel_size, bias=bias)
            for i in range(num_convs)
        ]
        super().__init__(*convs)


class DecoderStage(nn.Sequential):
    """conv-bn(-relu) x n after unpooling; the last conv maps to the next (shallower) stage's width."""

    def __init__(self, channels: int, out_channels: int, num_convs: int, *, kernel_size: int, relu: bool):
        convs = [
            ConvBNReLU(channels, out_channels if i == num_convs - 1 else channels, kernel_size, relu=relu)
            for i in range(num_convs)
        ]
        super().__init__(*convs)


class SegNet(SegmentationModel):
    """Encoder stages with switch-keeping max-pools, mirrored decoder stages, a classifier conv.

    ``stage_channels`` / ``stage_convs`` describe the encoder, ``decoder_convs`` the mirrored
    decoder (shallowest stage first).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        stage_channels: tuple[int, ...],
        stage_convs: tuple[int, ...],
        decoder_convs: tuple[int, ...],
        kernel_size: int,
        encoder_bias: bool,
        decoder_relu: bool,
        classifier_kernel: int,
        unpool: UnpoolMode,
        model_name: str,
    ) -> None:
        super().__init__()
        if unpool not in UNPOOL_MODES:
            raise ConfigError(f"{model_name}: unpool={unpool!r}; choose one of {', '.join(UNPOOL_MODES)}")
        self.model_name = model_name
        self.input_multiple = 2 ** len(stage_channels)
        self.unpool: UnpoolMode = unpool
        in_channels = (3, *stage_channels[:-1])
        self.encoder = nn.ModuleList(
            EncoderStage(cin, cout, n, kernel_size=kernel_size, bias=encoder_bias)
            for cin, cout, n in zip(in_channels, stage_channels, stage_convs, strict=True)
        )
        # Decoder stage i undoes encoder stage i; its convs end at encoder stage i's input width,
        # except the shallowest, which feeds the classifier.
        out_channels = (stage_channels[0], *stage_channels[:-1])
        decoder = [
            DecoderStage(cin, cout, n, kernel_size=kernel_size, relu=decoder_relu)
            for cin, cout, n in zip(stage_channels, out_channels, decoder_convs, strict=True)
        ]
        self.decoder = nn.ModuleList(reversed(decoder))  # deepest first, the order forward runs them
        self.classifier = nn.Conv2d(
            stage_channels[0], num_classes, classifier_kernel, padding=classifier_kernel // 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        switches = []
        for stage in self.encoder:
            x, stage_switches = max_pool_2x(stage(x), mode=self.unpool)
            switches.append(stage_switches)
        for stage, stage_switches in zip(self.decoder, reversed(switches), strict=True):
            x = stage(max_unpool_2x(x, stage_switches, mode=self.unpool))
        logits = self.classifier(x)  # already at input resolution
        return {"out": logits} if self.training else logits

    def prepare_for_export(self) -> SegNet:
        """Eval mode and mask unpooling (no MaxUnpool / indices in the ONNX graph)."""
        self.unpool = "mask"
        return self.eval()


def _check_no_aux(aux: bool, *, model_name: str) -> None:
    if aux:
        raise ConfigError(f"{model_name} has no auxiliary heads; pass aux=False")


@register_model("segnet")
def build_segnet(
    *,
    num_classes: int,
    width: float = 1.0,
    unpool: UnpoolMode = "indices",
    aux: bool = False,
    pretrained: bool | str = False,
) -> SegNet:
    """SegNet: VGG16-BN encoder (13 convs in stages of 2, 2, 3, 3, 3), mirrored decoder.

    Args:
        num_classes: classifier outputs.
        width: channel multiplier (1.0 = 64..512 channels as in the paper; 0.25 for CPU work).
        unpool: ``"indices"`` (train) or ``"mask"`` (export-safe, identical results).
        aux: must be False; SegNet has no auxiliary heads.
        pretrained: False, True (torchvision's vgg16_bn file from the local hub cache) or a
            local .pth path of a torchvision vgg16_bn state dict; only with width=1.0.

    Raises:
        ConfigError: bad width / unpool, aux=True, pretrained with width != 1 or a missing file.
        ModelError: an unreadable or ill-fitting weights file.
    """
    check_width(width, model_name="segnet")
    _check_no_aux(aux, model_name="segnet")
    if pretrained and width != 1.0:
        raise ConfigError(f"segnet: pretrained VGG16-BN weights need width=1.0, got width={width}")
    model = SegNet(
        num_classes=num_classes,
        stage_channels=tuple(scaled_channels(c, width) for c in VGG16_STAGE_CHANNELS),
        stage_convs=VGG16_STAGE_CONVS,
        # The classifier takes the place of the shallowest stage's last conv (the paper's Caffe model).
        decoder_convs=(1, *VGG16_STAGE_CONVS[1:]),
        kernel_size=3,
        encoder_bias=True,  # VGG16-BN's convolutions carry biases; keeps its weights loadable
        decoder_relu=True,
        classifier_kernel=3,
        unpool=unpool,
        model_name="segnet",
    )
    state = load_pretrained_state(pretrained, weights=VGG16_BN_Weights.DEFAULT, model_name="segnet")
    if state is not None:
        _load_vgg16_bn_encoder(model, state, source=str(pretrained))
    return model


def _load_vgg16_bn_encoder(model: SegNet, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Copy torchvision vgg16_bn's 13 conv+bn pairs, in order, into the SegNet encoder."""
    vgg = torchvision.models.vgg16_bn(weights=None)
    load_into(vgg, state, source=source)
    vgg_convs = [m for m in vgg.features if isinstance(m, nn.Conv2d)]
    vgg_bns = [m for m in vgg.features if isinstance(m, nn.BatchNorm2d)]
    ours = [block for stage in model.encoder for block in stage]
    for block, conv, bn in zip(ours, vgg_convs, vgg_bns, strict=True):
        block[0].load_state_dict(conv.state_dict())
        block[1].load_state_dict(bn.state_dict())


@register_model("segnet_basic")
def build_segnet_basic(
    *,
    num_classes: int,
    width: float = 1.0,
    unpool: UnpoolMode = "indices",
    aux: bool = False,
    pretrained: bool | str = False,
) -> SegNet:
    """SegNet-Basic, the paper's CamVid baseline: 4 encoder / 4 decoder layers of 7x7 convs, 64 channels.

    As in the paper, decoder convolutions have no ReLU and the classifier is a 1x1 conv.
    ``width`` scales the 64 channels; ``unpool`` and ``aux`` as for ``segnet``; no pretrained weights.
    """
    check_width(width, model_name="segnet_basic")
    _check_no_aux(aux, model_name="segnet_basic")
    check_no_pretrained(pretrained, model_name="segnet_basic")
    channels = scaled_channels(64, width)
    return SegNet(
        num_classes=num_classes,
        stage_channels=(channels,) * 4,
        stage_convs=(1,) * 4,
        decoder_convs=(1,) * 4,
        kernel_size=7,
        encoder_bias=False,
        decoder_relu=False,
        classifier_kernel=1,
        unpool=unpool,
        model_name="segnet_basic",
    )
