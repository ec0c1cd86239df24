"""``perception train``: train a segmentation model from a YAML config and/or flags.

    perception train --config configs/camvid_bisenetv2.yaml --out runs/camvid_bisenetv2
    perception train --model bisenetv2 --data synthetic --size 352x480 --steps 2000 --out runs/syn
    perception train --config configs/camvid_litefpn_cpu.yaml --pretrained ~/weights/lite0.pth
    perception train --resume runs/syn/last.pt            # continue exactly where it stopped
    torchrun --nproc_per_node 2 -m perception train --config ...   # DDP

Flags override the config file; ``--set key=value`` sets any key of ``TrainConfig`` (a flag and a
``--set`` of the same key together are refused, naming both). The resolved
config is printed and saved to ``<out>/config.yaml`` and in every checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from perception.config import cut
from perception.console import emit
from perception.errors import TRAIN_INSTALL_HINT, ConfigError, DependencyError
from perception.flags import add_flags, flag_values

log = logging.getLogger(__name__)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from perception.training.config import TrainConfig  # torch-free: a bad flag fails before torch loads

    parser.add_argument("--config", action="append", metavar="YAML",
                        help="YAML file of TrainConfig keys (see configs/); repeatable, a later file's keys win")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any config key (repeatable)")
    add_flags(parser, TrainConfig)  # the common keys as flags, generated from TrainConfig's declarations
    parser.add_argument("--resume", help="last.pt of an earlier run to continue from")


def overrides_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig keys given as flags and as ``--set``. A key given both ways (``--size 64x64
    --set input_hw=96x96``) is refused in one line naming both as typed: neither silently wins, and
    an error about the value names what set it."""
    from perception.flags import flags
    from perception.training.config import TrainConfig, parse_overrides

    from_flags, from_set = flag_values(TrainConfig, args), parse_overrides(args.set)
    for flag in flags(TrainConfig):
        if flag.name in from_flags and flag.name in from_set:
            typed = getattr(args, flag.name)
            flag_text = flag.option if flag.shape == "switch" else f"{flag.option} {typed}"
            set_text = next(item for item in args.set if item.partition("=")[0].strip() == flag.name)
            raise ConfigError(
                f"{cut(flag_text)} and --set {cut(set_text)} both set {flag.name}; give it once, as "
                f"{flag.option} or as --set {flag.name}=..."
            )
    return {**from_flags, **from_set}


def main(args: argparse.Namespace) -> int:
    from perception.signals import interrupt_on_stop_signals

    # SIGTERM and SIGHUP stop training as Ctrl-C does: the step finishes, last.pt is saved
    # (fit.stop_after_step_on_signal), one line, status 130; a second signal interrupts at once.
    with interrupt_on_stop_signals():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from perception.commands.synth import warn_if_portrait
    from perception.training.config import TrainConfig, load_train_config

    overrides = overrides_from_flags(args)
    if args.resume and Path(args.resume).is_dir():
        raise ConfigError(f"--resume {args.resume} is a folder; pass the run's last.pt: --resume "
                          f"{Path(args.resume) / 'last.pt'}")
    if args.resume and "out" not in overrides:
        # Continue in the folder that holds the checkpoint (a run moved or copied since carries its
        # old folder in its config), unless --out names another.
        overrides["out"] = str(Path(args.resume).parent)
    if not (args.resume and not args.config):
        config = load_train_config(args.config, overrides)  # a bad config fails before torch loads
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        raise DependencyError(f"training needs torch and torchvision: {TRAIN_INSTALL_HINT}") from None
    from perception.training.fit import fit

    if args.resume:
        from perception.config import load_config
        from perception.training.checkpoint import load_checkpoint

        resumed = load_checkpoint(args.resume)
        if not args.config:
            # The checkpoint's own config, so `--resume runs/x/last.pt` alone continues that run.
            config = load_config(TrainConfig, {**resumed.config, **overrides}, source=f"config of {args.resume}")
            _check_stored_data(Path(args.resume), resumed.config, overrides)
        _refuse_a_rewind(Path(args.resume), resumed.step, Path(config.out))
    if not args.resume:  # a resumed run's size was chosen (and warned about) when it started
        warn_if_portrait(config.input_hw)
    metrics = fit(config, resume=args.resume)
    if not math.isnan(metrics["miou"]):
        # best.pt only where this run beat the best score it started from (a resume into a new --out
        # carries the old run's best, so it may write none there).
        written = [name for name in ("best.pt", "last.pt") if (Path(metrics["run_dir"]) / name).is_file()]
        best = metrics.get("best")  # best.pt's step and mIoU: often not the last validation's
        best_text = f"; best val mIoU {100 * best['miou']:.2f} % at step {best['step']} (best.pt)" if best else ""
        emit(
            f"done: step {metrics['step']}, val mIoU {100 * metrics['miou']:.2f} %, G {100 * metrics['global_acc']:.2f} %, "
            f"C {100 * metrics['class_acc']:.2f} %{best_text}; checkpoints in {metrics['run_dir']} ({', '.join(written)})"
        )
    return 0


#: The data keys a checkpoint's config stores, and how a command line gives each instead.
_DATA_KEYS = {"data": "--data", "val_data": "--val-data", "mix_data": "--set mix_data="}


def _check_stored_data(resume: Path, stored: dict[str, Any], overrides: dict[str, Any]) -> None:
    """ConfigError when a data folder the checkpoint's config names (a path relative to where the
    run started: ``folder:ds``) is not there from here, naming the key, where the spec came from and
    the flag that gives it (with the folder it most likely means, found from the run's stored
    ``out``), instead of the reader's bare "dataset folder ds not found"."""
    from perception.training.run_dir import FOLDER_KINDS

    for key, flag in _DATA_KEYS.items():
        spec = stored.get(key)
        if key in overrides or not isinstance(spec, str):
            continue
        kind, _, argument = spec.partition(":")
        kind, argument = kind.strip(), argument.strip()
        if kind not in FOLDER_KINDS or not argument or Path(argument).expanduser().is_dir():
            continue
        started_in = _started_in(resume, stored.get("out"))
        candidate = started_in / argument if started_in is not None and not Path(argument).is_absolute() else None
        if candidate is not None and candidate.is_dir():
            fix = f"{flag}{'' if flag.endswith('=') else ' '}{kind}:{candidate}"
        else:
            fix = f"{flag}{'' if flag.endswith('=') else ' '}{kind}:PATH"
        raise ConfigError(
            f"--resume {resume}: the checkpoint's {key} {cut(spec)} is not found from here (a folder relative to "
            f"where the run started); give it with {cut(fix, 200)}"
        )


def _started_in(resume: Path, out: Any) -> Path | None:
    """The folder the run was started from: the resumed checkpoint's folder less the relative
    ``out`` the run stored (``runs/a`` for ``/home/me/runs/a/last.pt`` gives ``/home/me``); None
    when that cannot be told."""
    if not isinstance(out, str) or not out or Path(out).is_absolute():
        return None
    run_dir, parts = resume.resolve().parent, Path(out).parts
    if ".." in parts or len(parts) >= len(run_dir.parts) or run_dir.parts[-len(parts):] != parts:
        return None
    return run_dir.parents[len(parts) - 1]


def _refuse_a_rewind(resume: Path, step: int, out: Path) -> None:
    """ConfigError when resuming from an older checkpoint (``best.pt``, at ``step``) into a folder
    whose ``last.pt`` is further on: the run would train those steps again and replace ``last.pt``."""
    from perception.training.checkpoint import load_checkpoint

    last = out / "last.pt"
    if not last.is_file() or last.resolve() == resume.resolve():
        return
    now, then = step, load_checkpoint(last).step
    if then > now:
        raise ConfigError(
            f"{resume} is at step {now}, but {last} holds step {then}: resuming into {out} would train steps "
            f"{now + 1}-{then} again and replace it; resume from {last}, or branch off with --out <another folder>"
        )
