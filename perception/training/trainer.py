"""Training as short named steps: ``build -> data -> step -> evaluate -> checkpoint``.

This module holds the steps; ``fit.py`` holds the loop, ``run_state.py`` the checkpoints and resume, and ``fit(config)``
runs everything (``perception train`` calls it). Tests call the steps one by one:

    data = build_data(config)                        # datasets, augmentation, resumable loaders
    run = build_run(config, data)                    # model, optimiser, poly LR, AMP scaler, loss
    step(run, images, labels)                        # one optimiser step
    cm = evaluate(run, data)                         # ConfusionMatrix over the validation set
    train_steps(run, data, until_step=10)            # fit.py: the loop with periodic validation
    save_run_checkpoint(run, data, path)             # run_state.py: enough to evaluate, export or resume

Resume is exact: the checkpoint holds the optimiser, scheduler, scaler and the python / numpy /
torch RNG states, and the data order is a function of (seed, epoch), so a resumed run's next
step equals the uninterrupted run's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset

from perception.contracts import ClassTable
from perception.datasets import Dataset, SyntheticDataset, open_dataset
from perception.errors import ConfigError, DataError
from perception.metrics import ConfusionMatrix
from perception.progress import count_of
from perception.training.augment import (
    EvalSamples,
    TrainSamples,
    build_train_transform,
    collate_eval,
    ignore_id_of,
)
from perception.training.config import TrainConfig
from perception.training.distributed import (
    DistInfo,
    ResumableSampler,
    all_reduce_sum,
    pick_device,
)
from perception.training.label_stats import LabelStats, unlabelled_classes_warning, weights_from_stats
from perception.training.loaders import leave_sigint_to_main, loader_batches, make_loader
from perception.training.losses import build_loss
from perception.training.mix import MixedDataset, mix_label_lut

log = logging.getLogger(__name__)


@dataclass
class Data:
    train_set: Dataset
    val_set: Dataset
    samples: TrainSamples
    sampler: ResumableSampler
    loader: DataLoader
    val_loader: DataLoader
    ignore_id: int

    @property
    def class_table(self):
        return self.train_set.class_table

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler.dataset) // (self.sampler.num_replicas * self.loader.batch_size)


#: Training batches in a row without one labelled pixel that stop a run: one such batch can come
#: from a mostly void frame; this many in a row means the labels are wrong.
MAX_VOID_BATCHES = 20


@dataclass
class Run:
    config: TrainConfig
    info: DistInfo
    device: torch.device
    model: nn.Module  # DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    total_steps: int
    ema: AveragedModel | None = None  # the weight average, when config.ema_decay > 0
    step: int = 0
    best_miou: float = -1.0
    best_step: int | None = None  # the step of best_miou when this process validated it (not after a resume)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    ignore_id: int = 255  # the label id the loss ignores (the training data's)
    void_batches: int = 0  # batches in a row without a labelled pixel
    saved_step: int | None = None  # the step of the last.pt this run last wrote into its directory
    #: Training samples an epoch (``len(data.samples)``) the schedule was set with: stored in the
    #: checkpoint, so that a resume on data of another size can keep the run's schedule.
    train_samples: int | None = None
    #: The validation due at ``step`` began and did not finish (a file it could not read): a
    #: checkpoint saved now records it, and a resume from that checkpoint runs it first.
    val_pending: bool = False

    @property
    def bare_model(self) -> nn.Module:
        return self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model

    @property
    def kept_model(self) -> nn.Module:
        """The weights a run validates, checkpoints and so exports: the average when there is one."""
        return self.ema.module if self.ema is not None else self.bare_model

    @property
    def use_amp(self) -> bool:
        return self.config.amp and self.device.type == "cuda"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def build_data(config: TrainConfig, info: DistInfo | None = None) -> Data:
    """Open the datasets and make the (resumable, sharded) loaders. DataError when unusable."""
    info = info or DistInfo()
    train_set = open_dataset(config.data, split=config.train_split)
    val_set = open_dataset(config.val_data or config.data, split=config.val_split)
    if val_set.class_table.names != train_set.class_table.names:
        raise DataError(
            f"validation data {val_set.name!r} has classes {val_set.class_table.names}, "
            f"training data {train_set.name!r} has {train_set.class_table.names}; they must match"
        )
    ignore_id = ignore_id_of(train_set)
    sample_set = mixed_in(config, train_set, ignore_id) if config.mix_data else train_set
    per_epoch = len(sample_set) // (info.world_size * config.batch_size)
    if per_epoch == 0:
        raise DataError(too_few_samples(config, sample_set, info.world_size))
    transform = build_train_transform(
        config.input_hw,
        ignore_id=ignore_id,
        crop_hw=config.crop_hw,
        scale_range=config.scale_range,
        hflip=config.hflip,
        color_jitter=config.color_jitter,
        photometric=config.photometric,
        style_prob=config.style_prob,
        pasta=config.pasta,
        pasta_alpha=config.pasta_alpha,
        letterbox_prob=config.letterbox_prob,
    )
    samples = TrainSamples(sample_set, transform, seed=config.seed, copy_paste=config.copy_paste,
                           paste_ids=class_ids(train_set.class_table, config.copy_paste_classes, "copy_paste_classes"),
                           ignore_id=ignore_id)
    sampler = ResumableSampler(samples, info, seed=config.seed, batch_size=config.batch_size)
    loader = make_loader(
        samples,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        # A private generator: creating an iterator must not consume the global torch RNG, or a
        # resumed run would draw different dropout masks than an uninterrupted one.
        generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=leave_sigint_to_main,
    )
    val_shard = Subset(EvalSamples(val_set, config.input_hw), range(info.rank, len(val_set), info.world_size))
    val_loader = make_loader(
        val_shard,
        batch_size=config.val_batch_size,
        num_workers=config.workers,
        collate_fn=collate_eval,
        generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=leave_sigint_to_main,
    )
    return Data(train_set, val_set, samples, sampler, loader, val_loader, ignore_id)


#: The registered models that train on batches of one image: those without a BatchNorm after a
#: global pooling (``batch_of_one_blocker``; tests check the list against the registry).
SINGLE_IMAGE_MODELS = ("segnet_basic", "segnet", "litefpn")


def too_few_samples(config: TrainConfig, sample_set: Dataset, world_size: int) -> str:
    """The line for training data with fewer samples per process than one batch, naming the fixes
    that work: more images, a smaller --batch-size, or (one sample per process and a model that
    needs 2 images a batch) a model that trains on batches of one."""
    per_process = len(sample_set) // world_size
    smallest = 1 if config.model in SINGLE_IMAGE_MODELS else 2  # the smallest batch the model trains on
    head = (f"training data {sample_set.name!r} has {count_of(len(sample_set), 'sample')}, fewer than one batch of "
            f"{config.batch_size}" + (f" per process ({world_size} processes)" if world_size > 1 else ""))
    if per_process == 0:
        return (f"{head}; add images ({smallest * world_size} or more)"
                + (", or run fewer processes" if world_size > 1 else ""))
    if per_process >= smallest:
        return (f"{head}; use --batch-size 1, or add images" if per_process == 1
                else f"{head}; lower --batch-size to {per_process} or less, or add images")
    with_batch = "" if config.batch_size == 2 else ", with --batch-size 2"
    return (f"{head}; {config.model} trains on batches of 2 or more images (BatchNorm after a global pooling): add "
            f"images ({2 * world_size} or more{with_batch}), or {single_image_models()}")


def single_image_models() -> str:
    """The advice to train a model that takes batches of one image, naming them."""
    *first, last = SINGLE_IMAGE_MODELS
    return (f"train {', '.join(first)} or {last}, which take batches of one image "
            f"(--model {SINGLE_IMAGE_MODELS[0]} --batch-size 1)")


def class_ids(table: ClassTable, names: list[str], key: str) -> tuple[int, ...]:
    """The ids of ``names`` in ``table``; DataError naming the first unknown one and the table's classes."""
    for name in names:
        if name not in table.names:
            raise DataError(f"{key}: {name!r} is not a class of the training data; its classes: {', '.join(table.names)}")
    return tuple(table.names.index(name) for name in names)


def mixed_in(config: TrainConfig, train_set: Dataset, ignore_id: int) -> MixedDataset:
    """``train_set`` with ``config.mix_data`` mixed in at ``config.mix_share``, labels mapped by
    ``config.mix_classes``. Class weights and the run's class table stay those of ``train_set``."""
    mix_set = open_dataset(config.mix_data, split="train")
    lut = mix_label_lut(mix_set.class_table, train_set.class_table, config.mix_classes, ignore_id=ignore_id,
                        mix_ignore_id=mix_set.class_table.ignore_id)
    mixed = MixedDataset.with_share(train_set, mix_set, share=config.mix_share, lut=lut)
    log.info("training on %d samples an epoch: %d of %s and %d of %s (%.0f %%)", len(mixed), len(train_set),
             train_set.name, mixed.extra, mix_set.name, 100 * mixed.extra / len(mixed))
    return mixed


# --------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------


def build_model_for(config: TrainConfig, num_classes: int) -> nn.Module:
    from perception.models import build_model

    model = build_model(config.model, num_classes=num_classes, pretrained=config.pretrained, **config.model_kwargs)
    check = getattr(model, "check_input_size", None)
    if check is not None:
        check(*config.input_hw)
        if config.crop_hw is not None:
            try:
                check(*config.crop_hw)
            except ConfigError as exc:  # the model's words name an "input": say which setting it is
                raise ConfigError(f"crop_hw {config.crop_hw[0]}x{config.crop_hw[1]} (the training crop): {exc}") from None
    return model


def batch_of_one_blocker(model: nn.Module, input_hw: tuple[int, int], device: torch.device) -> str | None:
    """The name of the first BatchNorm layer of ``model`` that a batch of one ``input_hw`` image
    gives one value per channel (it follows a global pooling, as in bisenetv2's context block), or
    None. Training such a layer on one image fails ("Expected more than 1 value per channel").

    One forward pass in eval mode without gradients: the weights and the BatchNorm statistics are
    not touched (a train-mode probe would move the running statistics of pretrained weights)."""
    found: list[str] = []

    def watch(name: str):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            if not found and x.dim() >= 2 and x.numel() == x.shape[1]:
                found.append(name)
        return hook

    was_training = model.training
    model.train()  # a model may keep some layers in eval mode while it trains (litefpn's frozen stages)
    hooks = [module.register_forward_pre_hook(watch(name)) for name, module in model.named_modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_hw, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found[0] if found else None


def check_batch_of_one(model: nn.Module, config: TrainConfig, device: torch.device, *,
                       samples_per_process: int | None = None, world_size: int = 1) -> None:
    """ConfigError before anything is written when ``model`` cannot train on batches of one image
    (``batch_of_one_blocker``); the same holds per process under DDP, where the batch is per process.
    With ``samples_per_process`` under 2 (no batch of 2 to be had) the line says to add images."""
    hw = tuple(config.crop_hw or config.input_hw)
    layer = batch_of_one_blocker(model, hw, device)
    if layer is not None:
        fix = (f"use --batch-size 2 or more, or {single_image_models()}"
               if samples_per_process is None or samples_per_process >= 2
               else f"with {count_of(samples_per_process, 'training sample')}"
                    f"{' per process' if world_size > 1 else ''}, add images and use "
                    f"--batch-size 2 or more, or {single_image_models()}")
        raise ConfigError(
            f"--batch-size 1 cannot train {config.model}: BatchNorm needs at least 2 images a batch (per process "
            f"under DDP) where it follows a global pooling, as its layer {layer} does; {fix}"
        )


def poly_lr_factor(step: int, *, total_steps: int, warmup_steps: int, power: float) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then (1 - progress)^power down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 1.0 - progress) ** power


def build_run(config: TrainConfig, data: Data, *, info: DistInfo | None = None, model: nn.Module | None = None) -> Run:
    """Model (built from the registry unless given), optimiser, poly LR, AMP scaler and loss."""
    info = info or DistInfo()
    device = pick_device(config.device, info)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if config.init_seed is not None and model is None:
        _seed_everything(config.init_seed)  # the same initial weights on every rank and for every seed
        model = build_model_for(config, data.class_table.num_classes)
    _seed_everything(config.seed + info.rank)
    model = (model or build_model_for(config, data.class_table.num_classes)).to(device)
    if config.batch_size == 1:
        check_batch_of_one(model, config, device, samples_per_process=len(data.sampler.dataset) // info.world_size,
                           world_size=info.world_size)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.enabled:
        if device.type == "cuda" and config.sync_bn:
            # Small per-GPU batches give noisy BatchNorm statistics; SyncBatchNorm is CUDA-only.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    total_steps = config.steps or config.epochs * data.steps_per_epoch
    if config.warmup_steps > total_steps and info.is_main:
        log.warning("warmup_steps %d is longer than the run's %d steps: the learning rate never reaches its peak "
                    "(lr %g); lower warmup_steps", config.warmup_steps, total_steps, config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: poly_lr_factor(s, total_steps=total_steps, warmup_steps=config.warmup_steps, power=config.poly_power),
    )
    # The labels are read once for the class weights and the check of classes never labelled (rendered
    # synthetic scenes label every class of their table: no read only for that).
    stats = None
    if config.class_weighting != "none" or (info.is_main and not isinstance(data.train_set, SyntheticDataset)):
        stats = LabelStats.of(data.train_set)
        if info.is_main and (warning := unlabelled_classes_warning(stats, data.train_set, mixed=bool(config.mix_data))):
            log.warning("%s", warning)
    weights = None if config.class_weighting == "none" else weights_from_stats(config.class_weighting, stats)
    loss_fn = build_loss(config, class_table=data.class_table, ignore_id=data.ignore_id, class_weights=weights).to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    run = Run(config, info, device, model, optimizer, scheduler, scaler, loss_fn, total_steps, ignore_id=data.ignore_id,
              train_samples=len(data.samples))
    if config.ema_decay > 0:
        run.ema = weight_average(run.bare_model, config.ema_decay)
    return run


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of the ``updates + 1``-th update: ``min(decay, (1 + n) / (10 + n))``, the warm-up of
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)``, so that the first weights of a short
    run do not linger in the average."""
    return min(decay, (1 + updates) / (10 + updates))


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """torch's ``AveragedModel`` over the parameters and the BatchNorm buffers (so no BN re-estimation
    pass is needed), with EMA updates whose decay warms up as in ``ema_decay_at``."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        get_ema_multi_avg_fn(ema_decay_at(decay, int(updates)))(averaged, current, updates)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# step and evaluate
# --------------------------------------------------------------------------------------------


def step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """One optimiser step on a batch; returns the loss and the learning rate it used."""
    run.model.train()
    images = images.to(run.device, non_blocking=True)
    if run.config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = labels.to(run.device, non_blocking=True)
    lr = run.optimizer.param_groups[0]["lr"]
    labelled = bool((labels != run.ignore_id).any())
    run.void_batches = 0 if labelled else run.void_batches + 1
    # Steps are counted from 1 in what the user reads (the log's "step 1/40" trains the first batch):
    # this batch is step run.step + 1's.
    number = run.step + 1
    if run.void_batches >= MAX_VOID_BATCHES:
        raise DataError(
            f"the last {run.void_batches} training batches (steps {number - run.void_batches + 1}-{number}) had no "
            f"labelled pixel: every label pixel was the ignore id {run.ignore_id}; check that the labels hold the class "
            "table's ids (not colours, not all void)"
        )
    with torch.autocast(device_type=run.device.type, dtype=torch.float16, enabled=run.use_amp):
        outputs = run.model(images)
        if labelled:
            loss = run.loss_fn(outputs, labels)
        else:
            # A batch of void crops (rare: a mostly void frame, small crops) has nothing to learn from,
            # and the losses' mean over no pixel is NaN. Zero, with the outputs in the graph, so that
            # DDP's gradient exchange still happens on every rank.
            main = outputs["out"] if isinstance(outputs, dict) else outputs
            loss = main.sum() * 0.0
            if run.void_batches == 1:
                log.warning("the batch of step %d has no labelled pixel (every label is the ignore id %d); it "
                            "teaches nothing", number, run.ignore_id)
    if not torch.isfinite(loss):
        raise ConfigError(
            f"loss is {loss.item()} at step {number}: training diverged; lower lr or set grad_clip (e.g. 5.0)"
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.config.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.bare_model)
    run.step += 1
    return {"loss": float(loss.detach()), "lr": lr}


#: The most bytes of float32 logits at a label's size that scoring holds at once: larger labels are
#: resized and scored in column bands of about this size (``resized_logits``), so that a 48 MP label
#: does not need its num_classes x H x W float32 logits (2.3 GB for 12 classes) in memory, or on the GPU.
RESIZE_BAND_BYTES = 32 << 20


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate`` of ``x`` (C x h x w) to ``size`` (bilinear, align_corners=False). Three
    channels go one by one: on one CPU thread ATen picks another kernel for exactly three channels,
    whose rounding differs from the generic kernel's that ``resized_logits`` relies on."""
    if x.shape[0] == 3 and x.device.type == "cpu":
        return torch.cat([F.interpolate(x[None, c : c + 1], size=size, mode="bilinear")[0] for c in range(3)])
    return F.interpolate(x[None], size=size, mode="bilinear")[0]


def resized_logits(
    logits: torch.Tensor, size: tuple[int, int], *, band_bytes: int | None = None
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(columns, scores)``: ``logits`` (C x h x w) resized bilinearly (align_corners=False) to
    ``size`` (H x W), as float32, in bands of the label's columns, so that no more than about
    ``band_bytes`` (``RESIZE_BAND_BYTES``) of resized logits exist at once; one band (all columns)
    when that fits, or when no resize is needed (then the logits as they are).

    The values are ``F.interpolate(logits[None].float(), size, mode="bilinear")[0][:, :, columns]``
    bit for bit: the resize is done in two of F.interpolate's own passes, first the width alone
    (``C x h x W``, rows unchanged), then per band the height alone (columns unchanged). ATen's
    bilinear kernels (the CPU's generic one, and by its code CUDA's) interpolate along the width first and
    then across rows, with weights that depend only on the sizes and the output index, and a
    dimension of unchanged size gets the weights 1 and 0, which reproduce a value exactly. The
    one-pass call remains where it is small, and where its sizes would make ATen pick its
    channels-last CPU kernel (an output of height + width <= 128), whose rounding differs.

    Bands take the logits contiguous (and three classes one by one, ``_bilinear``): their values are
    the generic kernel's. Where the one-pass call would use ATen's channels-last CPU kernel for a
    large label (channels-last logits, as a ``channels_last: true`` model's validation gives, or
    three classes on one CPU thread), they can differ from it in the last bit, so in the class of
    a pixel whose two best logits tie to that bit.
    """
    h, w = logits.shape[-2:]
    if (h, w) == tuple(size):
        yield slice(None), logits
        return
    height, width = size
    budget = RESIZE_BAND_BYTES if band_bytes is None else band_bytes
    classes = logits.shape[0]
    full_bytes = 4 * classes * height * width
    if full_bytes <= budget or h + width <= 128 or height + width <= 128:
        yield slice(None), F.interpolate(logits[None].float(), size=size, mode="bilinear")[0]
        return
    logits = logits.float().contiguous()
    rows = _bilinear(logits, (h, width))  # C x h x W: bounded by the model's height
    bands = min(-(-full_bytes // budget), width)
    if height < 129:  # keep every band's height + width above 128 (see above)
        bands = min(bands, width // (129 - height))
    edges = [round(i * width / bands) for i in range(bands + 1)]
    for start, stop in zip(edges, edges[1:], strict=False):
        yield slice(start, stop), _bilinear(rows[:, :, start:stop], (height, stop - start))


def score_loader(
    model: nn.Module, loader: DataLoader, *, device: torch.device, num_classes: int, ignore_id: int, use_amp: bool
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` over ``(images, labels, contents)`` batches of ``EvalSamples``.

    Logits are cropped to the letterboxed image area and resized bilinearly to each label's size
    before the argmax, so scores are always at the dataset's resolution whatever the input size;
    a large label is resized and scored in column bands (``resized_logits``), with the same result.
    """
    return score_loader_biased(model, loader, [None], device=device, num_classes=num_classes, ignore_id=ignore_id,
                               use_amp=use_amp)[0]


@torch.no_grad()
def score_loader_biased(
    model: nn.Module, loader: DataLoader, biases: list[torch.Tensor | None], *, device: torch.device, num_classes: int,
    ignore_id: int, use_amp: bool, on_batch: Callable[[int], None] | None = None, channels_last: bool = False,
) -> list[ConfusionMatrix]:
    """``score_loader`` once per entry of ``biases`` (a length-C vector added to the logits before
    the argmax, or None), from one pass of the model: a confusion matrix each. ``on_batch(n)`` is
    called after each batch of ``n`` samples (progress). ``channels_last``: the images go in as
    channels-last (for a model the caller made channels-last: 1.6-2x faster on a CPU).

    On the CPU the argmax per bias runs in numpy: torch's argmax over the class dimension (the
    outermost, strided) took 34 ms a 11 x 360 x 480 frame against numpy's 13 ms, 40 % of a
    ``--logit-adjust auto`` sweep's 11 argmaxes a frame; both pick the first largest logit."""
    model.eval()
    cms = [ConfusionMatrix(num_classes, ignore_id=ignore_id) for _ in biases]
    cpu_biases = [None if b is None else b.detach().cpu().float().numpy() for b in biases]
    for images, labels, contents in loader_batches(loader):
        images = images.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(images)
        if isinstance(logits, dict):
            logits = logits["out"]
        for sample_logits, label, content in zip(logits, labels, contents, strict=True):
            top, left, height, width = content.tolist()
            sample_logits = sample_logits[:, top : top + height, left : left + width]
            labels_np = label.numpy()
            # In column bands for a large label: its full-size float32 logits could take gigabytes.
            for columns, scores in resized_logits(sample_logits, tuple(label.shape)):
                target = labels_np[:, columns]
                if scores.device.type == "cpu":
                    scores = scores.float().numpy()
                    for cm, bias in zip(cms, cpu_biases, strict=True):
                        cm.update((scores if bias is None else scores + bias[:, None, None]).argmax(0), target)
                    continue
                for cm, bias in zip(cms, biases, strict=True):
                    adjusted = scores if bias is None else scores + bias.to(scores)[:, None, None]
                    cm.update(adjusted.argmax(0).cpu().numpy(), target)
        if on_batch is not None:
            on_batch(len(labels))
    return cms


def evaluate(run: Run, data: Data, *, raw: bool = False) -> ConfusionMatrix:
    """Confusion matrix over the whole validation set (shards summed across ranks) of the kept
    weights (the average when the run keeps one), or of the trained weights themselves with ``raw``."""
    cm = score_loader(
        run.bare_model if raw else run.kept_model,
        data.val_loader,
        device=run.device,
        num_classes=data.class_table.num_classes,
        ignore_id=data.ignore_id,
        use_amp=run.use_amp,
    )
    matrix = all_reduce_sum(torch.from_numpy(cm.matrix).to(run.device), run.info)
    cm.matrix = matrix.cpu().numpy()
    return cm
