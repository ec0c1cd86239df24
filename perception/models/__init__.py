"""Segmentation models, chosen by name: ``build_model("bisenetv2", num_classes=11, aux=True)``.

Contract shared by every registered model (tests/test_models.py checks it):

- input: float tensor N x 3 x H x W, RGB, normalised with the ImageNet mean/std;
- ``model.train()``: ``forward`` returns a dict with ``"out"`` (main logits N x C x H x W at input
  resolution) and named auxiliary logits (``"aux"``, ``"aux2"``, ... also at input resolution);
  a model built with a detail head (litefpn ``detail=True``) adds ``"detail"``, one boundary
  logit per pixel at 1/4 resolution (N x 1 x H/4 x W/4), which only the detail loss reads;
- ``model.eval()``: ``forward`` returns the main logits tensor N x C x H x W at input resolution;
- ``model.input_multiple``: H and W must be multiples of it; ``model.check_input_size(h, w)``
  raises ``ConfigError`` with the nearest valid sizes otherwise;
- no downloads and no device moves in ``__init__``.

Needs the ``train`` extra (torch, torchvision); the runtime node never imports this package.
"""

from __future__ import annotations

import inspect
from typing import Any

from perception.errors import ConfigError
from perception.registry import Registry

MODELS: Registry[Any] = Registry("model")
register_model = MODELS.register


def build_model(name: str, *, num_classes: int, **kwargs: Any):
    """Build the registered model ``name``; unknown names fail with the list of known ones.

    Raises:
        ConfigError: unknown ``name``, or a keyword (``model_kwargs`` in a config) the builder lacks.
    """
    _import_all()
    builder = MODELS.get(name)
    # model_kwargs come from YAML or --set: name the key and the accepted ones instead of a TypeError.
    accepted = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option {unknown[0]!r} (model_kwargs); its options: {', '.join(accepted)}"
        )
    return builder(num_classes=num_classes, **kwargs)


def model_names() -> list[str]:
    _import_all()
    return MODELS.names()


def _import_all() -> None:
    # Each module registers its models on import.
    from perception.models import bisenetv1, bisenetv2, litefpn, pspnet, segnet  # noqa: F401
