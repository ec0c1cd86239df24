"""The version of the synthetic world: which scenes a ``synthetic`` spec and seed render.

The same spec and seed render the same bytes only within one world version. Bump
``SYNTHETIC_WORLD_VERSION`` in every change that alters a pixel or a label rendered for the same
spec and seed: a new object or material, a colour, a layout or motion rule, the sensor or lens
model, another order or number of random draws (``world/``, ``render/``, ``drive.py``,
``dataset.py``). Refactors that leave every rendered byte as it was keep it.

It is recorded where a run or a model records its data: a training run's validation figures
(``synthetic_world`` beside ``miou`` in the checkpoint's metrics, the model metadata's
``val_metrics`` and ``metrics.jsonl``) and ``synth.yaml``. A resume or an eval on ``synthetic``
data against figures of another world version (or of an earlier release, which recorded none) says
so in one warning (``world_change``): the figures come from other scenes and are not comparable.
"""

from __future__ import annotations

#: Raised whenever rendering changes (see above). Files from before it was recorded carry none.
SYNTHETIC_WORLD_VERSION = 1

#: The key that records it (in validation metrics and ``synth.yaml``).
WORLD_KEY = "synthetic_world"


def is_synthetic(spec: str | None) -> bool:
    """Whether a dataset spec names the synthetic world (``synthetic``, ``synthetic:count=8``)."""
    return bool(spec) and spec.partition(":")[0].strip() == "synthetic"


def recorded_world(metrics: object) -> int | None:
    """The world version that validation figures (or a ``synth.yaml``) record; None when none is recorded."""
    value = metrics.get(WORLD_KEY) if isinstance(metrics, dict) else None
    return value if type(value) is int else None


def world_change(recorded: int | None, *, whose: str, consequence: str) -> str | None:
    """One warning line when figures recorded in world version ``recorded`` (None: an earlier release
    recorded none) are compared with this release's scenes; None when they are the same world.
    ``whose``: what was measured there ("checkpoint run/last.pt's validation figures");
    ``consequence``: what it means here."""
    if recorded == SYNTHETIC_WORLD_VERSION:
        return None
    was = f"version {recorded}" if recorded is not None else \
        "an unknown version (an earlier release recorded none)"
    return (f"{whose} were measured in synthetic world {was}; this release renders synthetic world version "
            f"{SYNTHETIC_WORLD_VERSION}, other scenes for the same spec and seed: {consequence}")
