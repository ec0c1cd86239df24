"""Building blocks shared by the segmentation models: the model base class and conv-bn-relu.

``SegmentationModel`` carries the parts of the model contract (see ``perception.models``) that
are the same for every architecture: ``input_multiple``, ``check_input_size`` and
``prepare_for_export``. Needs torch; the runtime node never imports this module.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from perception.errors import ConfigError


def state_dict_mismatch(exc: RuntimeError) -> str:
    """The telling line of torch's ``load_state_dict`` error (it lists every tensor): the first size
    mismatch, else its first line, cut short."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    return next((ln for ln in lines if "size mismatch" in ln), lines[0])[:300]


def scaled_channels(channels: int, width: float, *, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``).

    Multiples of 8 keep convolutions on fast SIMD / tensor-core paths for every width.
    """
    return max(divisor, int(round(channels * width / divisor)) * divisor)


def check_width(width: float, *, model_name: str) -> None:
    """ConfigError unless ``width`` is a positive number no larger than 4."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ConfigError(
            f"{model_name}: width={width!r} must be a number in (0, 4]; 1.0 is the paper's size"
        )


def upsample_like(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (align_corners=False, the ONNX Resize default that TensorRT runs).

    ``size`` comes from a tensor's ``shape[-2:]``, so both ONNX exporters record the static size.
    """
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU (ReLU optional); 'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        relu: bool = True,
        bias: bool = False,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SegmentationHead(nn.Sequential):
    """conv-bn-relu 3x3, dropout (training only), 1x1 classifier: logits at the feature resolution."""

    def __init__(
        self, in_channels: int, mid_channels: int, num_classes: int, *, dropout: float = 0.1
    ) -> None:
        super().__init__(
            ConvBNReLU(in_channels, mid_channels, 3),
            nn.Dropout(dropout),
            nn.Conv2d(mid_channels, num_classes, 1),
        )


class SegmentationModel(nn.Module):
    """Base class of every registered model: input-size rule and export hook.

    Subclasses set ``model_name`` and ``input_multiple`` and implement ``forward`` per the
    contract in ``perception.models`` (dict of logits in training, logits tensor in eval).
    """

    model_name: str = "model"
    #: H and W of the input must be multiples of this (the product of the strides).
    input_multiple: int = 32

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ConfigError naming the two nearest valid sizes when H or W is not a valid multiple."""
        m = self.input_multiple
        if height > 0 and width > 0 and height % m == 0 and width % m == 0:
            return
        heights = {max(m, height // m * m), max(m, -(-height // m) * m)}
        widths = {max(m, width // m * m), max(m, -(-width // m) * m)}
        nearest = sorted(
            itertools.product(heights, widths), key=lambda hw: abs(hw[0] - height) + abs(hw[1] - width)
        )
        options = " or ".join(f"{h}x{w}" for h, w in nearest[:2])
        raise ConfigError(
            f"input {height}x{width} is not a multiple of {m} for {self.model_name}; use {options}"
        )

    def prepare_for_export(self) -> SegmentationModel:
        """Switch to the export graph (eval mode, export-safe ops); returns ``self``.

        The base version only sets eval mode: auxiliary heads are not run in eval, so they never
        reach the exported graph. Models with training-only or TensorRT-unfriendly ops override it.
        """
        return self.eval()
