"""ImageNet backbones from torchvision and the offline rules for their pretrained weights.

``pretrained`` on every builder is ``False`` (random init), a path to a local ``.pth`` state dict,
or ``True``: torchvision's weights file in the local torch hub cache
(``torch.hub.get_dir()/checkpoints/<file>``). When that file is not there yet, torchvision
downloads it once into the cache and checks its SHA-256 prefix (``check_hash=True``); offline,
the download fails with a one-line ConfigError that names the file, the URL and where to put it.
Set ``PERCEPTION_NO_DOWNLOAD=1`` to turn a missing cache file into that error without trying the
network (tests and CI do).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights, ResNet50_Weights, WeightsEnum

from perception.errors import ConfigError, ModelError
from perception.models.common import state_dict_mismatch

log = logging.getLogger(__name__)

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
            f"{model_name} has no ImageNet-pretrained backbone; drop --pretrained (or --pretrained none) to train "
            "from scratch"
        )


def load_pretrained_state(
    pretrained: bool | str, *, weights: WeightsEnum, model_name: str
) -> dict[str, torch.Tensor] | None:
    """The backbone state dict that ``pretrained`` asks for, or None for random init.

    Args:
        pretrained: False, True (torchvision's file: the local hub cache, else downloaded there once
            and hash-checked) or a local file path.
        weights: the torchvision weights enum whose file ``True`` refers to.
        model_name: named in error messages.

    Raises:
        ConfigError: the file is not there and cannot be downloaded (for True: names the cache path
            and the URL to fetch).
        ModelError: the file is there but is not a readable state dict.
    """
    if not pretrained:
        return None
    if pretrained is True:
        path = cached_weights_path(weights)
        if not path.is_file():
            download_weights(weights, path, model_name=model_name)
    elif isinstance(pretrained, (str, Path)):
        path = check_weights_file(Path(pretrained), model_name=model_name)
    else:
        raise ConfigError(f"{model_name}: pretrained={pretrained!r} must be False, True or a .pth file path")
    return read_state_dict(path, model_name=model_name)


def check_weights_file(path: Path, *, model_name: str) -> Path:
    """``path`` when it names a file; ConfigError (one line) when it is missing or a directory."""
    if path.is_dir():
        raise ConfigError(f"{model_name}: pretrained weights {path} is a directory; pass the .pth file in it")
    if not path.is_file():
        raise ConfigError(f"{model_name}: pretrained weights file {path} not found; check the path")
    return path


#: Keys under which training scripts wrap a state dict with their own bookkeeping (epoch,
#: optimiser): ``state_dict`` (PyTorch Lightning, mmcv, timm's train script) and ``model`` (DeiT,
#: detectron-style); timm's own loader (``timm.models.load_state_dict``) unwraps the same two.
WRAPPER_KEYS = ("state_dict", "model")
#: The prefix ``torch.nn.DataParallel`` / ``DistributedDataParallel`` puts before every key.
PARALLEL_PREFIX = "module."


def _starts_like_torch_file(path: Path) -> bool:
    """Whether ``path`` opens as ``torch.save`` writes: a zip archive, or a pickle (protocol 2 and up)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return True  # torch's own error names it
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def read_state_dict(path: Path, *, model_name: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (tensors only, ``weights_only``); ModelError when unreadable.

    A state dict wrapped by a training script (``{"state_dict": ..., "epoch": ...}``, see
    ``WRAPPER_KEYS``) is unwrapped and a ``module.`` prefix on every key (DataParallel) dropped, as
    timm does. A checkpoint of ``perception train`` is refused pointing to ``--resume``; a
    tensor holding NaN or infinity is refused naming its key, since training from it would stop
    at the first step with a NaN loss that points to the learning rate instead.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        # weights_only refuses a pickle of other objects, which is what a training checkpoint is.
        other = "; it holds more than tensors: a 'perception train' checkpoint continues with --resume FILE" \
            if type(exc).__name__ == "UnpicklingError" else ""
        if not _starts_like_torch_file(path):  # a text file, an image: torch's KeyError says nothing
            raise ModelError(f"{model_name}: pretrained weights {path} cannot be read: it is not a PyTorch file "
                             "(torch.save writes a zip archive or a pickle; this is neither); pass a .pth state dict "
                             "of the encoder") from None
        raise ModelError(
            f"{model_name}: pretrained weights {path} cannot be read as a state dict ({type(exc).__name__}){other}"
        ) from None
    if not isinstance(state, dict):
        raise ModelError(
            f"{model_name}: pretrained weights {path} hold no state dict; expected a .pth state dict"
        )
    if {"format", "model_name", "state_dict"} <= state.keys():  # training.checkpoint's layout
        raise ModelError(
            f"{model_name}: {path} is a 'perception train' checkpoint, not encoder weights: continue its run with "
            f"--resume {path}; --pretrained takes a .pth state dict of the encoder (ImageNet weights)"
        )
    wrapper = next((k for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
    if wrapper is not None and not all(isinstance(v, torch.Tensor) for v in state.values()):
        log.info("%s: using the %r entry of %s (a training script's wrapper)", model_name, wrapper, path)
        state = state[wrapper]
    if state and all(isinstance(k, str) and k.startswith(PARALLEL_PREFIX) for k in state):
        state = {k[len(PARALLEL_PREFIX):]: v for k, v in state.items()}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(
                f"{model_name}: pretrained weights {path} hold {type(value).__name__} under {str(key)[:80]!r}, not a "
                "tensor; expected a .pth state dict (name -> tensor)"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(
                f"{model_name}: pretrained weights {path} are damaged: {str(key)[:80]!r} holds NaN or infinite values; "
                "download or convert the file again"
            )
    return state


def download_weights(weights: WeightsEnum, path: Path, *, model_name: str) -> None:
    """Download ``weights`` once into the torch hub cache at ``path``, checking its hash.

    Raises:
        ConfigError: offline, download refused, ``PERCEPTION_NO_DOWNLOAD`` set, or a hash mismatch;
            one line naming the file, the URL and ``path``.
    """
    fix = (
        f"{model_name}: pretrained=True needs torchvision's {weights} weights file {path.name} at {path}; "
        f"download {weights.url} there yourself, or pass a local .pth path (--pretrained PATH), or pretrained=False"
    )
    if os.environ.get("PERCEPTION_NO_DOWNLOAD"):
        raise ConfigError(f"{fix} (PERCEPTION_NO_DOWNLOAD is set)")
    try:
        # torchvision's own loader: saves to <hub dir>/checkpoints/<file> and checks the SHA-256
        # prefix in the file name; the next call finds the file in the cache.
        torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True, map_location="cpu")
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise ConfigError(f"{fix} (download failed: {str(exc).splitlines()[0][:120]})") from None


def load_into(module: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``module.load_state_dict(state)`` strictly; ModelError naming ``source`` when it does not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch lists every key and tensor (kilobytes for a ResNet): name the first and count the rest.
        expected, given = set(module.state_dict()), set(state)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        if missing or unexpected:
            first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
            what = f"{first} ({len(missing)} missing, {len(unexpected)} unexpected)"
        else:
            what = state_dict_mismatch(exc)
        raise ModelError(f"pretrained weights {source} do not fit the backbone: {what}") from None


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


class MobileNetV3Features(nn.Module):
    """torchvision's MobileNetV3-Large trunk returning features at strides 4, 8, 16, 32.

    ``forward(x) -> (c2, c3, c4, c5)`` with ``channels == (24, 40, 112, 960)``; ``pretrained`` as
    for the ResNets (torchvision's ``MobileNet_V3_Large_Weights.DEFAULT``). The classifier is
    loaded with the weights (so every key is checked) and then dropped.
    """

    #: indices into ``mobilenet_v3_large().features`` that end each output stride
    STAGE_ENDS = (3, 6, 12, 16)
    channels = (24, 40, 112, 960)

    def __init__(self, *, pretrained: bool | str, model_name: str) -> None:
        super().__init__()
        net = torchvision.models.mobilenet_v3_large(weights=None)
        weights = MobileNet_V3_Large_Weights.DEFAULT
        state = load_pretrained_state(pretrained, weights=weights, model_name=model_name)
        if state is not None:
            load_into(net, state, source=str(pretrained if pretrained is not True else weights))
        self.stages = nn.ModuleList()
        start = 0
        for end in self.STAGE_ENDS:
            self.stages.append(net.features[start : end + 1])
            start = end + 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return tuple(features)
