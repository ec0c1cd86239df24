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
