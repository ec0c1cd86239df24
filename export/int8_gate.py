"""The INT8 gate of the export chain: an INT8 file is scored against its FP32 model on labelled
images (mIoU, class-id agreement) and timed beside it (ONNX Runtime CPU latency), and the verdict
is stored in the INT8 file's metadata (``val_metrics["int8_gate"]``).

The budget is ``MAX_MIOU_DROP_POINTS``; ``--engine auto`` holds an INT8 candidate to the agreement
recorded here (``engines.auto``; ``int8_min_agreement``). Where OpenVINO is installed the INT8 file
is also run as ``--engine openvino`` runs it, and that agreement is recorded and checked too: the
same QDQ file can be computed otherwise there (``qdq.padded_pool_inputs``). ``quantize.py`` writes
the files this module judges. The labels must be of the model's class table
(``check_gate_classes``, run by both CLIs before calibration).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.contracts import INPUT_NAME, ClassTable
from perception.engines.probe import INT8_AGREEMENT_FLOOR, int8_min_agreement
from perception.errors import DataError, DependencyError, ModelError
from perception.model_metadata import ModelMetadata
from perception.modelfile_graph import saturation_safe

#: Largest validation mIoU loss of INT8 vs FP32 that passes the gate, in points (0..100 scale).
MAX_MIOU_DROP_POINTS = 0.5
#: Fewer val images than this and the verdict comes with a warning that it means little. Chosen,
#: not measured: on a handful of images a class is scored on the one or two that hold it, so a few
#: hundred pixels flipping at one class border can move its IoU, and so the mIoU, by more than the
#: 0.5-point budget, and the verdict could turn on other images of the same data. 20 is a fifth of
#: the default (``DEFAULT_GATE_IMAGES``, 100; CamVid's val split has 101), where no single image
#: decides the mean; the warning does not change the verdict.
FEW_GATE_IMAGES = 20
#: Class names an error shows of each table before "...".
_NAMES_SHOWN = 6


def check_gate_classes(
    model_table: ClassTable, dataset, *, model: str, flag: str, fix: str, what: str = "INT8 gate"
) -> None:
    """DataError, in one line, unless the labelled ``dataset`` (``perception.datasets.Dataset``)
    that ``flag`` names has ``model_table``'s classes: the check of ``perception eval``
    (``training.evaluate.check_classes``), worded for the INT8 gate with ``fix`` (what to pass).

    Scored against another class table's labels, the gate's mIoU (and NNCF's accuracy control)
    means nothing, yet the gate would pass and store it in the INT8 file, where ``--engine auto``
    reads it. Run it on the opened dataset, before any image is read or calibrated; ``what`` names
    the step in the message.
    """
    from perception.training.evaluate import check_classes

    try:
        check_classes(model_table, dataset, source=model)
    except DataError:
        ours, theirs = list(model_table.names), list(dataset.class_table.names)
        where = ""
        if ours[:_NAMES_SHOWN] == theirs[:_NAMES_SHOWN]:  # the shortened lists alone would not show it
            i = next(i for i, (a, b) in enumerate(zip([*ours, None], [*theirs, None], strict=False)) if a != b)
            where = f" (class {i}: {_name_at(ours, i)} vs {_name_at(theirs, i)})"
        raise DataError(
            f"{what}: {model} predicts classes {_names(ours)}, but {flag} {dataset.name!r} labels "
            f"{_names(theirs)}{where}: scored against another class table its mIoU would mean nothing; {fix}"
        ) from None


def check_gate_labels(samples, table: ClassTable, *, spec: str, what: str = "INT8 gate", fix: str = "") -> None:
    """DataError, in ``perception eval``'s line, when no label of ``samples`` ((image, label) pairs)
    holds one of ``table``'s class ids: every pixel is the ignore id (or outside the table), so
    both mIoUs are NaN and the gate (or NNCF's accuracy control) would judge, and store, nothing.
    Run it on the loaded images, before any calibration; ``fix`` is added to the message."""
    from perception.metrics import no_labelled_pixels

    for i, (_, label) in enumerate(samples):
        if label is None:
            raise DataError(f"{what}: image {i} of {spec} has no label, and the gate scores labels; "
                            + (fix or "pass a labelled dataset"))
    if any(np.count_nonzero(label < table.num_classes) for _, label in samples):
        return
    raise DataError(f"{what}: {no_labelled_pixels(spec, 'val', _Scored(table, len(samples)))}"
                    + (f"; {fix}" if fix else ""))


class _Scored:
    """What ``perception eval``'s message reads of a dataset: its class table and its length (here
    the images the gate scores)."""

    def __init__(self, class_table: ClassTable, count: int) -> None:
        self.class_table, self._count = class_table, count

    def __len__(self) -> int:
        return self._count


def val_data_fix(*, val_data: str | None, calib: str, trained_on: str) -> str:
    """The fix ``check_gate_classes`` gives for the gate's dataset: ``--val-data`` naming the
    dataset the model was trained for (``trained_on``, its metadata's or checkpoint's spec, when
    that is not the refused one), keeping ``--calib`` when ``--val-data`` defaulted to it."""
    import shlex

    refused = val_data or calib
    spec = shlex.quote(trained_on) if trained_on and trained_on.strip() != refused.strip() else "SPEC"
    what = f"--val-data {spec} (the dataset the model was trained for)" if spec != "SPEC" else \
        "--val-data SPEC naming the dataset the model was trained for"
    if val_data:
        return f"pass {what}"
    return f"calibration needs no labels, so keep --calib {shlex.quote(calib)} and add {what}"


def _names(names: list[str]) -> str:
    """``names`` as a list, its first ``_NAMES_SHOWN`` only when longer (with how many there are)."""
    if len(names) <= _NAMES_SHOWN + 1:
        return str(names)
    return str(names[:_NAMES_SHOWN])[:-1] + f", ... {len(names)} in all]"


def _name_at(names: list[str], i: int) -> str:
    return repr(names[i]) if i < len(names) else "none"


#: Blocks the latency runs of each file are split into, the files taking turns block by block
#: (FP32 first in even blocks, INT8 first in odd ones). Timed one file after the other, a burst of
#: load from another process fell on one file only: two exports of one checkpoint printed x9.65 and
#: x0.90 on a busy 2-core machine, where interleaved timing of the same two files gave 1.5-2.0.
LATENCY_BLOCKS = 5


def latency_threads() -> int:
    """The intra-op threads the gate times with: what the node runs with by default (``--threads 0``,
    ONNX Runtime's own choice: one per physical core), made a fixed number it can print (at most the
    cores this process may use)."""
    import os

    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(usable, psutil.cpu_count(logical=False) or usable))


def _timing_session(model_path: str | Path, threads: int):
    """A CPU ONNX Runtime session set up as the node's (``engines.ort``): ``threads`` intra-op
    threads, one inter-op thread, worker threads that do not spin between operators."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX Runtime cannot load {Path(model_path).name}: {str(exc).splitlines()[0][:300]}") from None


def cpu_latencies_ms(models: dict[str, str | Path], image: np.ndarray, *, runs: int = 20, warmup: int = 3,
                     threads: int | None = None, blocks: int = LATENCY_BLOCKS) -> dict[str, list[float]]:
    """ONNX Runtime CPU latencies (ms) of ``runs`` single-image inferences of each of ``models``
    (name -> file), after ``warmup`` runs of each: interleaved in ``blocks`` blocks (the files take
    turns, the first file of a block alternating), so that load from other processes falls on every
    file alike, on ``threads`` intra-op threads (None: ``latency_threads()``) as the node runs."""
    threads = latency_threads() if threads is None else threads
    sessions = {name: _timing_session(path, threads) for name, path in models.items()}
    feed = {INPUT_NAME: image[None]}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    blocks = max(1, min(blocks, runs))
    latencies: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for block in range(blocks):
        count = runs // blocks + (block < runs % blocks)
        for name in order if block % 2 == 0 else order[::-1]:
            session = sessions[name]
            for _ in range(count):
                start = time.perf_counter()
                session.run(None, feed)
                latencies[name].append((time.perf_counter() - start) * 1e3)
    return latencies


@dataclass(frozen=True)
class Int8Report:
    """Figures of the INT8 gate."""

    fp32_miou: float
    int8_miou: float
    val_images: int
    fp32_p50_ms: float
    int8_p50_ms: float
    runs: int
    max_drop_points: float
    allowed_drop: bool
    #: Share of val pixels whose INT8 class id equals FP32's (ONNX Runtime, both files).
    agreement: float = float("nan")
    #: Every dense 8-bit weight fits 7 bits (``saturation_safe``): CPUs without VNNI compute the same.
    saturation_safe: bool = False
    #: Intra-op threads of the latency runs (0: ONNX Runtime's default) and the blocks they were
    #: interleaved in (``cpu_latencies_ms``).
    threads: int = 0
    blocks: int = 1
    #: Share of val pixels whose INT8 class id under OpenVINO (as ``--engine openvino`` runs it)
    #: equals FP32's on ONNX Runtime, and that mIoU; None where it was not measured
    #: (not installed; ``openvino_skipped`` says why when OpenVINO cannot compile the file).
    openvino_agreement: float | None = None
    openvino_miou: float | None = None
    openvino_skipped: str = ""
    #: Average pools OpenVINO pads otherwise than ONNX in this file (``engines.openvino.pool_padding_hazards``).
    openvino_hazards: tuple[str, ...] = ()

    def gate_record(self) -> dict:
        """What ``gate_int8`` stores in the INT8 file (``val_metrics["int8_gate"]``)."""
        gate = {
            "passed": self.passed, "fp32_miou": round(self.fp32_miou, 6), "int8_miou": round(self.int8_miou, 6),
            "drop_points": round(self.drop_points, 4), "budget_points": self.max_drop_points,
            "agreement_with_fp32": round(self.agreement, 6), "images": self.val_images,
            "saturation_safe": self.saturation_safe,
        }
        if self.openvino_agreement is not None:
            gate["openvino_agreement_with_fp32"] = round(self.openvino_agreement, 6)
        if self.openvino_miou is not None and self.openvino_miou == self.openvino_miou:  # NaN is not stored
            gate["openvino_int8_miou"] = round(self.openvino_miou, 6)
        return gate

    def openvino_lines(self) -> list[str]:
        """The gate's OpenVINO line, and a warning when its agreement is under ``int8_min_agreement``."""
        if self.openvino_agreement is None:
            return [f"  OpenVINO: not measured ({self.openvino_skipped})"] if self.openvino_skipped else []
        lines = [f"  OpenVINO INT8 (as --engine openvino runs it): class ids agree {100 * self.openvino_agreement:.2f} % "
                 f"with FP32, val mIoU {100 * (self.openvino_miou or 0):.2f}"]
        need = int8_min_agreement(self.gate_record())
        if self.openvino_agreement < need:
            why, fix = ((f"its average pool {self.openvino_hazards[0]} counts padding in and its input has a non-zero "
                         "zero point, which OpenVINO pads otherwise than ONNX", "quantise it again with this version")
                        if self.openvino_hazards else
                        ("OpenVINO computes this file otherwise than ONNX Runtime", "try --quantizer nncf"))
            lines.append(
                f"  warning: under OpenVINO its class ids agree only {100 * self.openvino_agreement:.2f} % with FP32, "
                f"under the {100 * need:.2f} % --engine auto asks of it: {why}; --engine openvino will say so when it "
                f"runs it; {fix}, or run it with --engine ort")
        return lines

    @property
    def drop_points(self) -> float:
        return 100.0 * (self.fp32_miou - self.int8_miou)

    @property
    def passed(self) -> bool:
        return self.drop_points <= self.max_drop_points and not self.agreement < INT8_AGREEMENT_FLOOR  # NaN: not measured

    @property
    def speedup(self) -> float:
        return self.fp32_p50_ms / self.int8_p50_ms if self.int8_p50_ms > 0 else float("nan")

    def lines(self) -> list[str]:
        verdict = "PASS" if self.passed else ("FAIL (allowed by --allow-int8-drop)" if self.allowed_drop else "FAIL")
        few = ([f"  warning: only {self.val_images} val image{'s' * (self.val_images != 1)}: too few for a "
                f"{self.max_drop_points:.1f}-point budget, the verdict could turn on other images of the same data; "
                f"gate on at least {FEW_GATE_IMAGES} (--val-count, default 100, from a val split that holds them)"]
               if self.val_images < FEW_GATE_IMAGES else [])
        return [
            f"int8 {verdict}: val mIoU FP32 {100 * self.fp32_miou:.2f} -> INT8 {100 * self.int8_miou:.2f} "
            f"(drop {self.drop_points:.2f} points, budget {self.max_drop_points:.1f}) on {self.val_images} images; "
            f"class ids agree {100 * self.agreement:.2f} % with FP32"
            + (f" (under the {100 * INT8_AGREEMENT_FLOOR:.0f} % an INT8 file must keep whatever its mIoU: not the "
               "same model; calibrate on frames like the node's, --calib)" if self.agreement < INT8_AGREEMENT_FLOOR else ""),
            f"  ORT CPU latency p50 FP32 {self.fp32_p50_ms:.2f} ms, INT8 {self.int8_p50_ms:.2f} ms "
            f"(x{self.speedup:.2f}: medians of {self.runs} runs each on one image"
            + (f", interleaved in {self.blocks} blocks" if self.blocks > 1 else "")
            + (f", {self.threads} thread{'s' * (self.threads != 1)} as the node's default" if self.threads else "")
            + ")",
            "  weights: " + ("dense 8-bit weights within 7 bits: the same class ids on CPUs with and without VNNI"
                             if self.saturation_safe else
                             "some dense 8-bit weights use the full range: CPUs without VNNI may saturate "
                             "(--overflow-fix enable; NNCF leaves grouped convolutions out, --quantizer ort does not)"),
            *self.openvino_lines(),
            *few,
        ]


def gate_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    val_samples,
    metadata: ModelMetadata,
    *,
    runs: int = 20,
    allow_drop: bool = False,
) -> Int8Report:
    """Score FP32 and INT8 on labelled ``val_samples`` and time both on one image.

    Returns an Int8Report (``passed`` tells the verdict; callers fail the export on it unless
    ``allow_drop``). The figures are also stored in the INT8 file's metadata
    (``val_metrics["int8_gate"]``): ``--engine auto`` holds an INT8 candidate to the class-id
    agreement the gate measured (``engines.auto``), not to the agreement a float engine must reach.
    """
    import onnx

    from perception.contracts import OUTPUT_CLASS_IDS
    from perception.export.verify import ort_session
    from perception.metrics import ConfusionMatrix
    from perception.modelfile import read_model_metadata, record_metadata

    table = metadata.class_table
    check_gate_labels(val_samples, table, spec="the gate's val images")  # NaN figures would be stored
    matrices = {"fp32": ConfusionMatrix(table.num_classes, ignore_id=table.ignore_id),
                "int8": ConfusionMatrix(table.num_classes, ignore_id=table.ignore_id)}
    sessions = {"fp32": ort_session(fp32_path), "int8": ort_session(int8_path)}
    agree, fp32_ids = [], []
    for image, label in val_samples:
        if label is None:
            raise DataError("evaluation needs labelled images; pass a dataset with labels")
        ids = {k: sess.run([OUTPUT_CLASS_IDS], {INPUT_NAME: image[None]})[0][0] for k, sess in sessions.items()}
        for k, matrix in matrices.items():
            matrix.update(ids[k], label)
        agree.append(float(np.mean(ids["fp32"] == ids["int8"])))
        fp32_ids.append(ids["fp32"])
    openvino = _openvino_figures(int8_path, val_samples, fp32_ids, table)
    threads = latency_threads()
    latencies = cpu_latencies_ms({"fp32": fp32_path, "int8": int8_path}, val_samples[0][0], runs=runs, threads=threads)
    fp32_ms, int8_ms = statistics.median(latencies["fp32"]), statistics.median(latencies["int8"])
    report = Int8Report(
        fp32_miou=matrices["fp32"].miou(),
        int8_miou=matrices["int8"].miou(),
        val_images=len(val_samples),
        fp32_p50_ms=fp32_ms,
        int8_p50_ms=int8_ms,
        runs=runs,
        max_drop_points=MAX_MIOU_DROP_POINTS,
        allowed_drop=allow_drop,
        agreement=float(np.mean(agree)),
        saturation_safe=saturation_safe(onnx.load(str(int8_path))),
        threads=threads,
        blocks=max(1, min(LATENCY_BLOCKS, runs)),
        **openvino,
    )
    record_metadata(int8_path, val_metrics={**read_model_metadata(int8_path).val_metrics,
                                            "int8_gate": report.gate_record()})
    return report


def _openvino_figures(int8_path: str | Path, val_samples, fp32_ids: list[np.ndarray], table: ClassTable) -> dict:
    """``Int8Report``'s OpenVINO fields: the INT8 file's class ids as ``--engine openvino`` computes
    them, against FP32's (``fp32_ids``, ONNX Runtime) and the labels; why not, where OpenVINO is not
    installed or cannot compile the file (neither fails the gate: ONNX Runtime runs the file)."""
    from perception.metrics import ConfusionMatrix

    try:
        from perception.engines.openvino import int8_class_ids

        ids, hazards = int8_class_ids(int8_path, [image for image, _ in val_samples])
    except (ImportError, DependencyError):
        return {}  # not installed: --engine openvino cannot run the file here either
    except ModelError as exc:
        return {"openvino_skipped": str(exc)}
    matrix = ConfusionMatrix(table.num_classes, ignore_id=table.ignore_id)
    for got, (_, label) in zip(ids, val_samples, strict=True):
        matrix.update(got, label)
    agreement = float(np.mean([np.mean(got == ref) for got, ref in zip(ids, fp32_ids, strict=True)]))
    return {"openvino_agreement": agreement, "openvino_miou": matrix.miou(), "openvino_hazards": tuple(hazards)}
