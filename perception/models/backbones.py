"""ImageNet backbones from torchvision and the offline rules for their pretrained weights.

``pretrained`` on every builder is ``False`` (random init), a path to a local ``.pth`` state dict,
or ``True``: torchvision's weights file, but only if it already sits in the local torch hub cache
(``torch.hub.get_dir()/checkpoints/<file>``). Nothing here ever downloads; a missing file is a
ConfigError that names the file and where to put it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, WeightsEnum

from perception.errors import ConfigError, ModelError

#: torchvision weights used for ``pretrained=True``, by backbone name.
RESNET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.DEFAULT,
    "resnet50": ResNet50_Weights.DEFAULT,
}


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps ``weights`` once downloaded: <hub dir>/checkpoints/<file name>."""
    filename = Path(urlparse(weights.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def check_no_pretrained(pretrained: bool | str, *, model_name: str) -> None:
    """ConfigError when a model without an ImageNet backbone is asked for pretrained weights."""
    if pretrained:
        raise ConfigError(
            f"{model_name} has no ImageNet-pretrained backbone; pass pretrained=False (train from scratch)"
        )


def load_pretrained_state(
    pretrained: bool | str, *, weights: WeightsEnum, model_name: str
) -> dict[str, torch.Tensor] | None:
    """The backbone state dict that ``pretrained`` asks for, or None for random init.

    Args:
        pretrained: False, True (torchvision's file from the local hub cache) or a local file path.
        weights: the torchvision weights enum whose file ``True`` refers to.
        model_name: named in error messages.

    Raises:
        ConfigError: the file is not there (for True: names the cache path and the URL to fetch).
        ModelError: the file is there but is not a readable state dict.
    """
    if not pretrained:
        return None
    if pretrained is True:
        path = cached_weights_path(weights)
        if not path.is_file():
            raise ConfigError(
                f"{model_name}: pretrained=True needs torchvision's {weights} weights file {path.name} "
                f"at {path}; download {weights.url} there yourself (perception never downloads), "
                "or pass a local .pth path, or pretrained=False"
            )
    elif isinstance(pretrained, (str, Path)):
        path = Path(pretrained)
        if not path.is_file():
            raise ConfigError(f"{model_name}: pretrained weights file {path} not found; check the path")
    else:
        raise ConfigError(f"{model_name}: pretrained={pretrained!r} must be False, True or a .pth file path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise ModelError(
            f"{model_name}: pretrained weights {path} cannot be read ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise ModelError(
            f"{model_name}: pretrained weights {path} hold no state dict; expected a .pth state dict"
        )
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``module.load_state_dict(state)`` strictly; ModelError naming ``source`` when it does not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ModelError(f"pretrained weights {source} do not fit the backbone: {first_line}") from None


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its classifier, returning the four stage outputs.

    ``forward(x) -> (c2, c3, c4, c5)`` at strides 4, 8, 16, 32, or 4, 8, 8, 8 with
    ``dilated=True`` (layer3 / layer4 trade their stride for dilation 2 / 4, as in PSPNet).
    """

    def __init__(self, name: str, *, pretrained: bool | str, dilated: bool, model_name: str) -> None:
        super().__init__()
        if name not in RESNET_WEIGHTS:
            raise ConfigError(f"{model_name}: unknown backbone {name!r}; known: {', '.join(RESNET_WEIGHTS)}")
        if name == "resnet18":
            net = torchvision.models.resnet18(weights=None)
        else:
            net = torchvision.models.resnet50(
                weights=None, replace_stride_with_dilation=[False, dilated, dilated]
            )
        state = load_pretrained_state(pretrained, weights=RESNET_WEIGHTS[name], model_name=model_name)
        if state is not None:
            load_into(net, state, source=str(pretrained if pretrained is not True else RESNET_WEIGHTS[name]))
        if dilated and name == "resnet18":
            # torchvision's BasicBlock refuses dilation > 1, so turn the strides of layer3 / layer4
            # into dilation here; the weights are unchanged (dilation only spreads the 3x3 taps).
            _stride_to_dilation(net.layer3, dilation=2)
            _stride_to_dilation(net.layer4, dilation=4)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if name == "resnet50" else 1
        self.channels = (64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


def _stride_to_dilation(layer: nn.Sequential, *, dilation: int) -> None:
    """Make every conv of a ResNet layer stride 1, and its 3x3 convs dilated with 'same' padding."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)
