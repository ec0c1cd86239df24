"""Every registered segmentation model against the contract in ``perception.models``.

Forward (eval and train), backward, input-size rule, pretrained-weights rules, SegNet's
export-safe unpooling, PSPNet's static pyramid pooling, and an ONNX export of each model.
Tiny widths and 64x96 inputs keep the file fast on a 2-core CPU.
"""

from __future__ import annotations

import collections

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perception.contracts import ONNX_OPSET
from perception.errors import ConfigError, ModelError
from perception.models import build_model, model_names
from perception.models.complexity import measure_complexity
from perception.models.pspnet import adaptive_avg_pool_exact
from perception.models.segnet import max_pool_2x, max_unpool_2x

NUM_CLASSES = 5
INPUT_HW = (64, 96)

#: One small variant per registered model and the auxiliary outputs it must return in training.
VARIANTS = {
    "segnet": ({"width": 0.125}, ()),
    "segnet_basic": ({"width": 0.25}, ()),
    "bisenetv1": ({}, ("aux", "aux2")),
    "bisenetv2": ({"width": 0.25}, ("aux", "aux2", "aux3", "aux4")),
    "pspnet": ({"backbone": "resnet18"}, ("aux",)),
    "litefpn": ({"channels": 16}, ("aux",)),
}
AUX_MODELS = [name for name, (_, aux) in VARIANTS.items() if aux]
#: Further variants of a registered model that change its graph: (model, kwargs, aux outputs).
EXTRA_VARIANTS = {
    "litefpn-output-stride-2": ("litefpn", {"channels": 16, "output_stride": 2}, ("aux",)),
}
ALL_VARIANTS = [*VARIANTS, *EXTRA_VARIANTS]


def _spec(variant: str) -> tuple[str, dict, tuple[str, ...]]:
    if variant in EXTRA_VARIANTS:
        return EXTRA_VARIANTS[variant]
    return (variant, *VARIANTS[variant])


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.setenv("PERCEPTION_NO_DOWNLOAD", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _build(variant: str, **overrides):
    name, kwargs, aux = _spec(variant)
    kwargs = dict(kwargs)
    if aux:
        kwargs["aux"] = True
    kwargs.update(overrides)
    return build_model(name, num_classes=NUM_CLASSES, **kwargs)


def test_every_registered_model_has_a_test_variant():
    assert set(model_names()) == set(VARIANTS)
    assert {"segnet", "bisenetv1", "bisenetv2", "pspnet"} <= set(model_names())


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError) as info:
        build_model("bisenet3", num_classes=3)
    message = str(info.value)
    assert "unknown model 'bisenet3'" in message
    for name in VARIANTS:
        assert name in message


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_eval_returns_logits_at_input_resolution(name):
    model = _build(name).eval()
    model.check_input_size(*INPUT_HW)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *INPUT_HW))
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (1, NUM_CLASSES, *INPUT_HW)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_train_returns_named_outputs_and_every_parameter_learns(name):
    model = _build(name).train()
    outputs = model(torch.randn(2, 3, *INPUT_HW))
    assert set(outputs) == {"out", *_spec(name)[2]}
    for key, logits in outputs.items():
        assert logits.shape == (2, NUM_CLASSES, *INPUT_HW), key
    target = torch.randint(0, NUM_CLASSES, (2, *INPUT_HW))
    loss = sum(F.cross_entropy(logits, target) for logits in outputs.values())
    loss.backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    # A module left out of forward (a head or branch wired wrongly) would show up here.
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize("name", AUX_MODELS)
def test_without_aux_training_returns_only_out(name):
    model = _build(name, aux=False).train()
    assert set(model(torch.randn(2, 3, *INPUT_HW))) == {"out"}
    assert not any(n.startswith("aux") for n, _ in model.named_parameters())


def test_aux_head_parameters_are_named_aux_so_deployment_checkpoints_may_drop_them():
    with_aux = set(_build("bisenetv2").state_dict())
    without_aux = set(_build("bisenetv2", aux=False).state_dict())
    assert with_aux > without_aux
    assert all(key.startswith("aux") for key in with_aux - without_aux)


def test_check_input_size_names_the_nearest_valid_sizes():
    model = _build("bisenetv2")
    assert model.input_multiple == 32
    with pytest.raises(
        ConfigError, match=r"input 360x481 is not a multiple of 32 for bisenetv2; use 352x480 or 384x480"
    ):
        model.check_input_size(360, 481)
    model.check_input_size(352, 480)
    # PSPNet's exact pyramid pooling accepts CamVid's 360x480 (stride 8 only).
    _build("pspnet").check_input_size(360, 480)
    with pytest.raises(ConfigError, match="multiple of 8 for pspnet; use 360x480 or 360x488"):
        _build("pspnet").check_input_size(360, 484)
    with pytest.raises(ConfigError, match="input 10x0 is not a multiple of 8 for pspnet; use 8x8 or 16x8"):
        _build("pspnet").check_input_size(10, 0)


@pytest.mark.parametrize(
    ("name", "kwargs", "filename"),
    [
        ("bisenetv1", {}, "resnet18-f37072fd.pth"),
        ("pspnet", {"backbone": "resnet18"}, "resnet18-f37072fd.pth"),
        ("pspnet", {"backbone": "resnet50"}, "resnet50-11ad3fa6.pth"),
        ("segnet", {"width": 1.0}, "vgg16_bn-6c64b313.pth"),
        ("litefpn", {"encoder": "mobilenet_v3_large"}, "mobilenet_v3_large-5c1a4163.pth"),
    ],
)
def test_pretrained_true_without_cached_file_names_the_file(name, kwargs, filename, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError, match=filename) as info:
        build_model(name, num_classes=NUM_CLASSES, pretrained=True, **kwargs)
    assert str(tmp_path / "checkpoints" / filename) in str(info.value)
    assert "download.pytorch.org" in str(info.value)


def test_pretrained_true_loads_the_cached_file(tmp_path, monkeypatch):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_model("bisenetv1", num_classes=NUM_CLASSES, pretrained=True)
    backbone = model.context_path.backbone
    assert torch.equal(backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(backbone.stem[0].weight, reference.conv1.weight)


def test_pretrained_path_must_exist_and_fit(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_model(
            "pspnet", num_classes=NUM_CLASSES, backbone="resnet18", pretrained=str(tmp_path / "x.pth")
        )
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ModelError, match="do not fit"):
        build_model("pspnet", num_classes=NUM_CLASSES, backbone="resnet18", pretrained=str(wrong))


@pytest.mark.parametrize("name", ["bisenetv2", "segnet_basic"])
def test_models_without_pretrained_backbone_refuse_pretrained(name):
    with pytest.raises(ConfigError, match="no ImageNet-pretrained backbone"):
        build_model(name, num_classes=NUM_CLASSES, pretrained=True)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("bisenetv2", {"width": 0}, "width=0"),
        ("segnet", {"aux": True}, "no auxiliary heads"),
        ("segnet", {"unpool": "bilinear"}, "unpool='bilinear'"),
        ("segnet", {"width": 0.5, "pretrained": True}, "width=1.0"),
        ("pspnet", {"backbone": "resnet34"}, "unknown backbone 'resnet34'"),
        ("litefpn", {"output_stride": 8}, "output_stride=8 must be 4"),
        ("litefpn", {"encoder": "mobilenet_v3_large", "output_stride": 2}, "needs encoder efficientnet_lite0"),
    ],
)
def test_bad_builder_arguments_raise_config_error(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, num_classes=NUM_CLASSES, **kwargs)


def test_litefpn_output_stride_2_classifies_at_half_resolution_on_the_stride_2_feature():
    coarse = _build("litefpn").eval()
    fine = _build("litefpn-output-stride-2").eval()
    seen = {}
    fine.fine.classify.register_forward_hook(lambda m, args, out: seen.update(shape=tuple(out.shape)))
    with torch.no_grad():
        fine(torch.randn(1, 3, *INPUT_HW))
    assert seen["shape"] == (1, NUM_CLASSES, INPUT_HW[0] // 2, INPUT_HW[1] // 2)
    assert fine.fine.lateral[0].in_channels == fine.encoder.stride2_channels == 16
    # The 1/4 levels keep their names: only the classifier moves (head.1 -> fine.classify).
    coarse_keys, fine_keys = set(coarse.state_dict()), set(fine.state_dict())
    assert coarse_keys - fine_keys == {"head.1.weight", "head.1.bias"}
    assert all(key.startswith("fine.") for key in fine_keys - coarse_keys)


def test_litefpn_detail_head_trains_at_quarter_resolution_and_leaves_inference_alone():
    model = _build("litefpn", detail=True).train()
    outputs = model(torch.randn(2, 3, *INPUT_HW))
    assert set(outputs) == {"out", "aux", "detail"}
    assert outputs["detail"].shape == (2, 1, INPUT_HW[0] // 4, INPUT_HW[1] // 4)
    outputs["detail"].sum().backward()
    assert model.aux_detail[0][0].weight.grad.abs().sum() > 0
    # The head is training-only: the same weights without it give the same logits (what export runs).
    plain = _build("litefpn")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("aux_detail.")}
    plain.load_state_dict(state)
    x = torch.randn(1, 3, *INPUT_HW)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain.eval()(x))
    with pytest.raises(ConfigError, match="detail='yes' must be true or false"):
        _build("litefpn", detail="yes")


def test_pspnet_resnet50_builds_dilated_to_output_stride_8():
    model = build_model("pspnet", num_classes=NUM_CLASSES, backbone="resnet50")
    assert sum(p.numel() for p in model.parameters()) > 40e6
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 32, 48))
    assert [f.shape[-2:] for f in features] == [(8, 12), (4, 6), (4, 6), (4, 6)]
    assert [f.shape[1] for f in features] == [256, 512, 1024, 2048]


def test_mask_unpooling_equals_index_unpooling_on_tie_free_input():
    x = torch.randn(2, 6, 16, 24, dtype=torch.float64)
    windows = F.pixel_unshuffle(x, 2).unflatten(1, (6, 4))
    assert (windows.sort(dim=2).values.diff(dim=2) != 0).all()  # no ties
    pooled_idx, indices = max_pool_2x(x, mode="indices")
    pooled_mask, mask = max_pool_2x(x, mode="mask")
    assert torch.equal(pooled_idx, pooled_mask)
    decoder = torch.randn_like(pooled_idx)
    assert torch.equal(
        max_unpool_2x(decoder, indices, mode="indices"), max_unpool_2x(decoder, mask, mode="mask")
    )


def test_mask_unpooling_breaks_ties_like_max_pool_indices():
    # Ties are common after ReLU (windows of zeros): the mask keeps only the first maximum in
    # row-major order, the one max_pool2d's index points at, so the results stay identical.
    x = torch.relu(torch.randn(2, 4, 8, 8)).round()
    x[:, :, :2, :2] = 1.0  # a window tied at four cells
    _, indices = max_pool_2x(x, mode="indices")
    _, mask = max_pool_2x(x, mode="mask")
    assert (mask.sum(dim=2) == 1).all()
    decoder = torch.randn(2, 4, 4, 4)
    by_index = max_unpool_2x(decoder, indices, mode="indices")
    assert torch.equal(by_index, max_unpool_2x(decoder, mask, mode="mask"))
    assert torch.equal(
        by_index[:, :, :2, :2] != 0, torch.tensor([[True, False], [False, False]]).expand(2, 4, 2, 2)
    )


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_segnet_export_mode_matches_training_unpooling(name):
    model = _build(name).eval()
    x = torch.randn(1, 3, *INPUT_HW)
    with torch.no_grad():
        by_index = model(x)
        assert model.prepare_for_export() is model and model.unpool == "mask" and not model.training
        assert torch.allclose(model(x), by_index, atol=1e-6)


@pytest.mark.parametrize("size", [(45, 60), (8, 12), (4, 5)])
def test_exact_pyramid_pooling_equals_adaptive_avg_pool(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    for bins in (1, 2, 3, 6):
        expected = F.adaptive_avg_pool2d(x, bins)
        assert torch.allclose(adaptive_avg_pool_exact(x, bins), expected, atol=1e-12)


def test_complexity_counts_params_and_flops():
    light = measure_complexity(_build("bisenetv2", width=0.25), INPUT_HW)
    heavier = measure_complexity(_build("bisenetv2", width=0.5), INPUT_HW)
    assert 0 < light.params < heavier.params and 0 < light.flops < heavier.flops
    with pytest.raises(ConfigError):
        measure_complexity(_build("bisenetv2"), (60, 96))


def test_the_default_training_size_fits_every_model():
    # `perception train` with no --size used 360x480, which the default model (a multiple of 32) refused.
    from perception.training.config import TrainConfig

    default = TrainConfig()
    for variant in VARIANTS:
        _build(variant).check_input_size(*default.input_hw)


def test_the_complexity_table_lists_every_registered_model():
    # The README says `python -m perception.models.complexity` prints every variant; a new model
    # registered without a row would be missing from it (litefpn was, until a README audit).
    from perception.models import model_names
    from perception.models.complexity import VARIANTS

    assert set(model_names()) <= {name for _label, name, _kwargs in VARIANTS}


# The registered models themselves go through the exporter, with its ORT-vs-PyTorch logit gate, in
# test_export.py (test_every_model_exports_and_passes_gate); exporting them here too cost 40 s of
# the suite for nothing that test does not check.
@pytest.mark.parametrize("name", list(EXTRA_VARIANTS))
def test_onnx_export_runs_in_onnxruntime(name):
    model = _build(name).prepare_for_export()
    x = torch.randn(1, 3, *INPUT_HW)
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=ONNX_OPSET, optimize=False)
    graph = program.model_proto.graph
    ops = collections.Counter(node.op_type for node in graph.node)
    assert len(graph.output) == 1
    assert "MaxUnpool" not in ops and "AdaptiveAvgPool" not in ops
    assert all(dim.dim_value > 0 for dim in graph.input[0].type.tensor_type.shape.dim)  # static shape
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_logits = model(x).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-4)
