"""Model size and cost: parameters and FLOPs of a registered model at a given input size.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products,
2 FLOPs per multiply-add; element-wise ops are not counted), measured on the eval-mode graph,
i.e. what is exported. Run::

    python -m perception.models.complexity --input-hw 352x480
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from perception.config import parse_hw
from perception.errors import ConfigError
from perception.models import build_model


@dataclass(frozen=True)
class ModelComplexity:
    params: int
    flops: int
    input_hw: tuple[int, int]

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def measure_complexity(model: torch.nn.Module, input_hw: tuple[int, int]) -> ModelComplexity:
    """Parameters (all, aux heads included) and eval-mode FLOPs for one 3 x H x W image.

    Raises ConfigError when ``input_hw`` does not suit the model.
    """
    height, width = input_hw
    model.check_input_size(height, width)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, height, width))
    model.train(was_training)
    return ModelComplexity(
        params=sum(p.numel() for p in model.parameters()), flops=counter.get_total_flops(), input_hw=input_hw
    )


#: The variants compared in the README table: (label, model name, builder kwargs).
VARIANTS: tuple[tuple[str, str, dict], ...] = (
    ("segnet", "segnet", {"width": 1.0}),
    ("segnet w0.25", "segnet", {"width": 0.25}),
    ("segnet_basic", "segnet_basic", {}),
    ("bisenetv1", "bisenetv1", {}),
    ("bisenetv2", "bisenetv2", {"width": 1.0}),
    ("bisenetv2 w0.5", "bisenetv2", {"width": 0.5}),
    ("bisenetv2 light", "bisenetv2", {"width": 0.5, "head_channels": 128}),
    ("pspnet r18", "pspnet", {"backbone": "resnet18"}),
    ("pspnet r50", "pspnet", {"backbone": "resnet50"}),
    ("litefpn lite0", "litefpn", {"encoder": "efficientnet_lite0"}),
    ("litefpn lite0 os2", "litefpn", {"encoder": "efficientnet_lite0", "output_stride": 2}),
    ("litefpn mnv3", "litefpn", {"encoder": "mobilenet_v3_large"}),
)


def _parse_hw(text: str) -> tuple[int, int]:
    try:
        return parse_hw(text, what="--input-hw")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--input-hw", type=_parse_hw, default=(352, 480), help="H x W, default 352x480")
    parser.add_argument("--num-classes", type=int, default=11)
    args = parser.parse_args(argv)
    print(f"{'model':<18}{'params (M)':>12}{'GFLOPs':>10}  input {args.input_hw[0]}x{args.input_hw[1]}")
    for label, name, kwargs in VARIANTS:
        model = build_model(name, num_classes=args.num_classes, aux=False, **kwargs)
        try:
            cost = measure_complexity(model, args.input_hw)
        except ConfigError as exc:
            print(f"{label:<18}  skipped: {exc}")
            continue
        print(f"{label:<18}{cost.params_m:>12.2f}{cost.flops / 1e9:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
