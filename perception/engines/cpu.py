"""What this CPU is and which vector instructions it has, read without any inference library.

The engine probe keys its cache on these (a model's fastest engine differs between a Xeon with
AMX and an EPYC with AVX2 only) and ``perception bench`` prints them in its environment block.
Linux reads ``/proc/cpuinfo``; elsewhere the model comes from ``platform`` and the ISA list is empty.
"""

from __future__ import annotations

import platform
from functools import lru_cache

#: /proc/cpuinfo flag -> the name people use for it, in the order they appeared in Intel/AMD CPUs.
ISA_FLAGS = (
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("avx512_fp16", "AVX-512 FP16"),
    ("amx_bf16", "AMX-BF16"),
    ("amx_int8", "AMX-INT8"),
    ("amx_fp16", "AMX-FP16"),
    ("asimd", "NEON"),
    ("sve", "SVE"),
)


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if not model and key in ("model name", "Hardware", "Model"):
                    model = value.strip()
                elif not flags and key in ("flags", "Features"):
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    return _cpuinfo()[0]


def cpu_isa() -> list[str]:
    """The vector extensions of ISA_FLAGS this CPU reports, e.g. ``["AVX2", "AVX-512", "AMX-BF16"]``."""
    flags = _cpuinfo()[1]
    return [name for flag, name in ISA_FLAGS if flag in flags]


#: Flags of the x86 instructions that multiply 8-bit values without a 16-bit intermediate sum.
_VNNI_FLAGS = frozenset({"avx_vnni", "avx512_vnni", "amx_int8"})


def _lacks_vnni() -> bool:
    """An x86 CPU with AVX2 but none of the VNNI/AMX-INT8 instructions."""
    flags = _cpuinfo()[1]
    return "avx2" in flags and not flags & _VNNI_FLAGS


def int8_saturation_warning(saturation_safe: bool = False) -> str:
    """Why INT8 class ids may drift from FP32 on this CPU, or ``""`` where they should not
    (a CPU with VNNI, or ``saturation_safe``: a file whose gate found its dense weights within
    7 bits, which ``perception.export.quantize`` writes by default).

    x86 CPUs without VNNI (AVX2 or AVX-512 only: older Xeons, AMD EPYC before Zen 4) multiply
    u8 x s8 with VPMADDUBSW, whose 16-bit intermediate sum saturates: OpenVINO documents it as the
    "saturation (overflow) issue" and ONNX Runtime's quantisation guide as U8S8 saturation on
    non-VNNI machines. Measured on a 2-core AMD EPYC (AVX2): the default model's INT8 file with
    full-range weights agreed with FP32 on 97.3 % of pixels (its gate: 98.65 %) and lost 1.15 mIoU on
    synthetic val, where a Xeon with VNNI loses 0.14; quantised with 7-bit weights it lost 0.11
    there. ARM and other CPUs are not judged here.
    """
    if saturation_safe or not _lacks_vnni():
        return ""
    return (
        f"INT8 on a CPU without VNNI ({cpu_model()}: {', '.join(cpu_isa())}): its 8-bit dot products can "
        "saturate (OpenVINO's 'saturation issue'), so class ids may differ from FP32 by more than the "
        "model's gate; --engine auto measures that agreement and runs only a candidate that passes it, and "
        "a file quantised with 7-bit weights (python -m perception.export.quantize --overflow-fix enable, "
        "the default) computes the same here as on a CPU with VNNI"
    )


def int8_gate_hint(saturation_safe: bool = False) -> str:
    """What an INT8 gate that failed on this CPU should add, or ``""``: on a CPU without VNNI a file
    with full-range 8-bit weights saturates, so the gate measured the kernels, not the file. A
    ``saturation_safe`` file computes the same on every x86 CPU: its failure is its own."""
    if saturation_safe or not _lacks_vnni():
        return ""
    return (f"; this CPU ({cpu_model()}) has no VNNI and some of the file's 8-bit weights use the full range, so "
            "its kernels saturate: quantise with --overflow-fix enable (7-bit weights; NNCF leaves grouped "
            "convolutions out, --quantizer ort does not), or gate this file on a CPU with VNNI or AMX")
