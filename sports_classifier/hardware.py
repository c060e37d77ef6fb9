"""Where a figure was measured: the CPU, the instruction sets that change int8 results, the
ONNX Runtime version and threads.

int8 accuracy and speed depend on the CPU. Without VNNI, ONNX Runtime's u8s8 kernels multiply
with ``vpmaddubsw``, whose 16-bit pair sums saturate for 8-bit weights (the bundled models use
7-bit weights so that they cannot; ``training/export.py``). So every accuracy or speed figure
the package records or shows carries ``measured_on()``, and a reader compares its ``int8_kind``
with this machine's before calling a figure "this server's".
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# /proc/cpuinfo flags worth naming, in the order they are shown.
FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "VNNI", "avx_vnni": "AVX-VNNI",
         "amx_int8": "AMX"}


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; the platform's names where there is none."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        if flags and key == "model name":
            break
    return model, flags


def int8_kind(flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """The family of int8 kernels ONNX Runtime picks here, which decides int8 results:
    ``x86-vnni`` (exact 32-bit sums), ``x86-avx2`` (``vpmaddubsw``, 16-bit pair sums that
    saturate for 8-bit weights), ``x86`` (neither), or the machine's architecture."""
    flags = _cpuinfo()[1] if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return machine or "unknown"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "x86-vnni"
    if "avx2" in flags:
        return "x86-avx2"
    return "x86"


def onnxruntime_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("onnxruntime")
    except Exception:  # not installed (a Keras-only environment)
        return None


def measured_on(threads: int | None = None) -> dict:
    """This machine, as recorded beside a figure (``metrics.json``, ``evaluate --json``, bench)."""
    from .runtime import physical_cores

    model, flags = _cpuinfo()
    return {"cpu": model, "flags": [name for flag, name in FLAGS.items() if flag in flags],
            "int8_kind": int8_kind(flags), "machine": platform.machine(),
            "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
            "onnxruntime": onnxruntime_version(), "threads": threads or physical_cores()}


def describe(where: dict | None) -> str:
    """One line for people: ``AMD EPYC (AVX2, AVX-512, VNNI), onnxruntime 1.32.0, 2 threads``."""
    if not where:
        return "an unrecorded CPU"
    flags = ", ".join(where.get("flags") or []) or where.get("int8_kind", "")
    text = f"{where.get('cpu', '?')}" + (f" ({flags})" if flags else "")
    if where.get("onnxruntime"):
        text += f", onnxruntime {where['onnxruntime']}"
    if where.get("threads"):
        text += f", {where['threads']} threads"
    return text


def same_int8_kind(where: dict | None, here: dict | None = None) -> bool | None:
    """Whether ``where`` computes int8 as this machine does (None: ``where`` is not recorded)."""
    if not where or "int8_kind" not in where:
        return None
    return where["int8_kind"] == (here or measured_on())["int8_kind"]
