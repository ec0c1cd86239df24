"""Logit adjustment at export (``perception export --logit-adjust TAU|auto``).

A model trained with class weights w (``class_weighting: enet`` or ``median_freq``) learns to
estimate w_c p(c | x) rather than p(c | x): the rare classes it up-weights win more pixels than they
own (a pole trained at ten times a road pixel's weight comes out fat). Subtracting ``tau * log w_c``
from the logits before the argmax moves the decision back towards the unweighted posterior while
keeping what the weights taught the features (logit adjustment, Menon et al., "Long-tail learning
via logit adjustment", ICLR 2021): tau 0 is the model as trained, tau 1 undoes the weights at the
decision. The vector is centred (adding a constant to every class changes nothing) and added to the
logits inside the exported graph, so the ONNX file, its INT8 file and every engine decide alike and
the node needs nothing new. ``auto`` chooses tau on the checkpoint's own TRAINING frames (best mIoU
over 0, 0.1, ..., 1; the smaller tau on a tie), never on validation data.

The weights are recomputed from the checkpoint's training data exactly as training computed them
(``label_stats.class_weights_of``), so that data must be readable where the export runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from perception.errors import ConfigError

#: The taus ``auto`` tries.
AUTO_TAUS = tuple(round(0.1 * i, 1) for i in range(11))
#: Weights below this are clipped before the log (median-frequency weights are 0 for unseen classes).
MIN_WEIGHT = 1e-6
#: Seconds between the sweep's progress lines off a terminal (training's heartbeat too).
PROGRESS_INTERVAL_S = 30.0


@dataclass
class LogitAdjustment:
    """The bias added to the logits and how it was chosen (stored in the metadata as ``logit_adjust``)."""

    tau: float
    weighting: str
    bias: list[float]
    rule: str
    sweep: dict[str, float] = field(default_factory=dict)

    def to_metadata(self) -> dict:
        return {"tau": self.tau, "weighting": self.weighting, "bias": self.bias, "rule": self.rule,
                "sweep_miou": self.sweep}


def centred_bias(log_weights: np.ndarray, tau: float) -> np.ndarray:
    """``-tau * log w``, centred to mean 0, as float32."""
    return (-tau * (log_weights - log_weights.mean())).astype(np.float32)


def training_log_weights(ckpt, *, source: str) -> tuple[str, np.ndarray, object]:
    """``(weighting, log w, training dataset)`` of checkpoint ``ckpt`` (recomputed from its data).

    Raises ConfigError for a model trained without class weights; DataError when its training data
    cannot be opened here."""
    from perception.training.label_stats import class_weights_of

    config = ckpt.config or {}
    weighting = str(config.get("class_weighting", "none"))
    if weighting == "none":
        raise ConfigError(f"--logit-adjust: {source} was trained without class weights (class_weighting: none); "
                          "there is nothing to adjust, leave the flag out")
    data = str(config.get("data", "") or ckpt.dataset)
    if not data:
        raise ConfigError(f"--logit-adjust: {source} does not say which data it was trained on, so its class "
                          "weights cannot be recomputed; re-train with this version of perception")
    from perception.export import open_recorded_dataset

    train_set = open_recorded_dataset(data, str(config.get("train_split", "train")), recorded_in=source,
                                      fix="--logit-adjust recomputes the class weights from it: run the "
                                          "export where that data is found")
    weights = class_weights_of(weighting, train_set)
    return weighting, np.log(np.maximum(np.asarray(weights, dtype=np.float64), MIN_WEIGHT)), train_set


def choose(ckpt, model, tau: float | str, *, input_hw: tuple[int, int], source: str,
           report: Callable[[str], None]) -> LogitAdjustment:
    """The adjustment for ``--logit-adjust tau`` (a number, or ``auto``: chosen on training frames)."""
    weighting, log_w, train_set = training_log_weights(ckpt, source=source)
    if tau != "auto":
        tau = float(tau)
        rule = f"given (perception export --logit-adjust {tau:g}); class weights {weighting} of {train_set.name}"
        return LogitAdjustment(tau, weighting, centred_bias(log_w, tau).tolist(), rule)
    sweep = sweep_training_frames(model, train_set, log_w, input_hw=input_hw, report=report)
    best = max(AUTO_TAUS, key=lambda t: (round(sweep[t], 6), -t))
    rule = (f"auto: best mIoU on the {len(train_set)} training frames of {train_set.name} over tau "
            f"{AUTO_TAUS[0]:g}..{AUTO_TAUS[-1]:g} (class weights {weighting})")
    return LogitAdjustment(best, weighting, centred_bias(log_w, best).tolist(), rule,
                           sweep={f"{t:g}": round(sweep[t], 6) for t in AUTO_TAUS})


def sweep_training_frames(model, train_set, log_w: np.ndarray, *, input_hw: tuple[int, int],
                          report: Callable[[str], None], progress_file: TextIO | None = None) -> dict[float, float]:
    """mIoU per tau of ``AUTO_TAUS`` on ``train_set``, letterboxed as the node does, from one pass.

    One model pass (channels-last on the CPU): each frame's logits are scored at every tau before the
    next frame (the taus only add a bias before the argmax). ``report`` gets a line when the sweep
    starts and the mIoU per tau at its end; progress (``perception.progress``: a bar on a terminal,
    else a line every ``PROGRESS_INTERVAL_S`` with the frames done and the ETA, and a closing line)
    goes to ``progress_file`` (default stderr), as training's does."""
    import torch
    from torch.utils.data import DataLoader

    from perception.progress import progress
    from perception.training.augment import EvalSamples, collate_eval, ignore_id_of
    from perception.training.trainer import score_loader_biased

    biases = [torch.from_numpy(centred_bias(log_w, t)) for t in AUTO_TAUS]
    loader = DataLoader(EvalSamples(train_set, input_hw), batch_size=4, num_workers=0, collate_fn=collate_eval)
    report(f"logit adjustment: scoring tau {AUTO_TAUS[0]:g}, {AUTO_TAUS[1]:g}, ..., {AUTO_TAUS[-1]:g} on the "
           f"{len(train_set)} training frames of {train_set.name} at {input_hw[0]}x{input_hw[1]} (one model pass)")
    # Channels-last convolutions: 1.6-2x faster on a CPU (LiteFPN 448x608, 2 cores), logits within 2e-7;
    # the model is given back in its own layout for the export.
    model.to(memory_format=torch.channels_last)
    try:
        with progress(total=len(train_set), desc="logit adjustment", unit="frame", file=progress_file,
                      interval_s=PROGRESS_INTERVAL_S) as bar:
            cms = score_loader_biased(model, loader, biases, device=torch.device("cpu"),
                                      num_classes=train_set.class_table.num_classes, ignore_id=ignore_id_of(train_set),
                                      use_amp=False, on_batch=bar.update, channels_last=True)
    finally:
        model.to(memory_format=torch.contiguous_format)
    sweep = {t: float(cm.miou()) for t, cm in zip(AUTO_TAUS, cms, strict=True)}
    report("logit adjustment: training-frame mIoU by tau: "
           + ", ".join(f"{t:g} {100 * m:.2f}" for t, m in sweep.items()))
    return sweep
