"""Golden outputs: every registered model, with seeded weights on a fixed input, must give the
stored logits (after three seeded train-mode passes that set the BatchNorm statistics), so an unintended numerical change to any model (an init, a layer order, a padding,
an activation) fails here, loudly, instead of passing the shape-only tests.

What is stored (tests/golden/model_logits.json) is a fingerprint of the eval-mode logits: shape,
sum, sum of squares and 32 values at fixed positions. The comparison allows 1e-4 relative: enough
for float32 summation order across CPUs (Intel/AMD kernels) and libraries, far below any real
change. A model whose numbers change on purpose regenerates its entry with

    PERCEPTION_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py

and the diff of the JSON goes in the same commit. A new torch release that changes initialisation
fails here first (`make test-latest`): regenerate after checking that nothing else changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception.models import build_model, model_names  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "model_logits.json"
UPDATE = os.environ.get("PERCEPTION_UPDATE_GOLDEN") == "1"
NUM_CLASSES = 5
INPUT_HW = (64, 96)
#: The configuration each model is fingerprinted in (small, no pretrained weights, no aux heads).
CONFIGS = {
    "segnet": {"width": 0.125},
    "segnet_basic": {"width": 0.25},
    "bisenetv1": {},
    "bisenetv2": {"width": 0.25},
    "pspnet": {"backbone": "resnet18"},
    "litefpn": {"channels": 16},
}
RTOL = 1e-4
POINTS = 32


pytestmark = pytest.mark.usefixtures("torch_offline_one_thread")


def fingerprint(name: str, tweak=None) -> dict:
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES, **CONFIGS.get(name, {}))
    if tweak is not None:
        tweak(model)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((1, 3, *INPUT_HW)).astype(np.float32))
    with torch.no_grad():
        # Three train-mode passes give BatchNorm real statistics; with its initial ones (mean 0,
        # variance 1) activations fade and the logits hardly depend on the weights.
        model.train()
        for _ in range(3):
            model(torch.from_numpy(rng.standard_normal((2, 3, *INPUT_HW)).astype(np.float32)))
        out = model.eval()(x)
    logits = (out["out"] if isinstance(out, dict) else out).double().numpy()
    flat = logits.ravel()
    positions = np.linspace(0, flat.size - 1, POINTS).round().astype(int)
    return {
        "shape": list(logits.shape),
        "sum": float(flat.sum()),
        "sum_sq": float((flat**2).sum()),
        "points": [float(v) for v in flat[positions]],
    }


def _stored() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


def test_every_registered_model_has_a_golden_entry():
    if UPDATE:
        pytest.skip("regenerating")
    missing = sorted(set(model_names()) - set(_stored()))
    assert not missing, f"no golden logits for {missing}; run PERCEPTION_UPDATE_GOLDEN=1 pytest tests/test_golden.py"


@pytest.mark.parametrize("name", model_names())
def test_model_logits_match_golden(name):
    got = fingerprint(name)
    if UPDATE:
        stored = _stored()
        stored[name] = got
        GOLDEN.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        return
    want = _stored().get(name)
    if want is None:
        pytest.fail(f"no golden logits for {name}; run PERCEPTION_UPDATE_GOLDEN=1 pytest tests/test_golden.py")
    assert got["shape"] == want["shape"]
    scale = max(abs(v) for v in want["points"]) or 1.0
    np.testing.assert_allclose(got["points"], want["points"], rtol=RTOL, atol=RTOL * scale,
                               err_msg=f"{name}: logits changed")
    np.testing.assert_allclose(got["sum_sq"], want["sum_sq"], rtol=RTOL, err_msg=f"{name}: logits changed")
    np.testing.assert_allclose(got["sum"], want["sum"], rtol=RTOL, atol=RTOL * np.sqrt(want["sum_sq"]),
                               err_msg=f"{name}: logits changed")


@pytest.mark.parametrize("name", ["bisenetv2", "segnet_basic"])
def test_golden_catches_a_small_change(name):
    """The check is sharp enough: 1 % noise on one convolution's weights fails it."""
    if UPDATE:
        pytest.skip("regenerating")

    def first_conv_one_percent_noise(model):
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # not a uniform scale: normalisation layers would cancel that
            conv.weight.mul_(1 + 0.01 * torch.randn(conv.weight.shape, generator=generator))

    want = _stored()[name]
    got = fingerprint(name, tweak=first_conv_one_percent_noise)
    scale = max(abs(v) for v in want["points"])
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got["points"], want["points"], rtol=RTOL, atol=RTOL * scale)
