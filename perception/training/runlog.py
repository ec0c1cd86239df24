"""The run directory's records: a JSONL metrics log and a PNG of the learning curves.

``metrics.jsonl`` holds one JSON object per line: ``{"kind": "train", "step", "epoch", "loss",
"lr", "images_per_s"}`` every ``log_every`` steps (the loss and images/s over those steps) and ``{"kind": "val", "step", "miou",
"global_acc", "class_acc"}`` after each validation (plus ``"trained_miou"``, the trained weights'
mIoU, when the run keeps a weight average and ``miou`` is the average's). ``curves.png`` (training loss and validation
mIoU against the step) is redrawn from that log after each validation. ``StepLines`` puts the same
training records on the console when there is no progress bar.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from perception.progress import RecentPace, clock_time


class RunLog:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.curves_path = run_dir / "curves.png"

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run replays them)."""
        kept = [r for r in self.records() if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")  # files only; never a window
        import matplotlib.pyplot as plt

        records = self.records()
        train = [r for r in records if r["kind"] == "train"]
        val = [r for r in records if r["kind"] == "val"]
        fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 4))
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train])
        ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
        averaged = any("trained_miou" in r for r in val)
        ax_miou.plot([r["step"] for r in val], [100 * r["miou"] for r in val], marker="o",
                     label="weight average" if averaged else None)
        if averaged:
            trained = [r for r in val if "trained_miou" in r]
            ax_miou.plot([r["step"] for r in trained], [100 * r["trained_miou"] for r in trained], marker=".",
                         label="trained weights")
            ax_miou.legend()
        ax_miou.set(xlabel="step", ylabel="val mIoU %", title="validation mIoU")
        for ax in (ax_loss, ax_miou):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.curves_path, dpi=100)
        plt.close(fig)
        return self.curves_path


#: Without a progress bar (``progress: false``), the fewest seconds between two console lines of
#: training progress, so that a small ``log_every`` on a fast GPU does not print several a second.
#: The lines of the first log step, of a step that validates and of the last step always come.
STEP_LINE_MIN_S = 15.0


class StepLines:
    """The console's training progress without a bar: at ``log_every`` steps (``log_step``) a line
    ``step 40/700: loss 1.2345, lr 9.98e-04, 2.4 img/s, elapsed 01:05, ETA 16:20``, at most one per
    ``STEP_LINE_MIN_S`` unless ``always``. The ETA is the steps left at the pace of about the last
    five minutes, validations included (``perception.progress.RecentPace``). The lines go to ``logger``
    (the training loop's, so the console names ``fit``)."""

    def __init__(self, first_step: int, total_steps: int, *, enabled: bool, logger: logging.Logger,
                 clock=time.monotonic) -> None:
        self.total, self.enabled, self.clock, self.logger = total_steps, enabled, clock, logger
        self.start = clock()
        self.pace = RecentPace(first_step, self.start)
        self.last_line: float | None = None

    def log_step(self, step_number: int, record: dict[str, float], *, always: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        self.pace.add(step_number, now)
        if not always and self.last_line is not None and now - self.last_line < STEP_LINE_MIN_S:
            return
        self.last_line = now
        left = self.pace.seconds_left(step_number, self.total, now)
        self.logger.info(
            "step %d/%d: loss %.4f, lr %.2e%s, elapsed %s%s",
            step_number, self.total, record["loss"], record["lr"],
            f", {record['images_per_s']:.1f} img/s" if "images_per_s" in record else "",
            clock_time(now - self.start), f", ETA {clock_time(left)}" if left is not None else "",
        )
