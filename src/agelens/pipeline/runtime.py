"""onnxruntime sessions, configured the same way for every network AgeLens runs."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import onnxruntime as ort

from agelens.errors import ModelError


def open_session(model_path: Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with full graph optimisation; ``run`` on it is thread-safe.

    One thread per run by default: the networks are small, so AgeLens gets its
    parallelism from several runs at once (batch workers, server requests), which
    measured 1.3x faster on photos here than two threads per run.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 1
    options.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: with several requests or batch workers
    # sharing the cores, spinning burns the time the others need (2.4x lower server
    # throughput here with it on).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{model_path}: not a loadable ONNX model ({error})") from error


#: The CPU features that decide which int8 kernels onnxruntime runs: without VNNI, x86
#: u8s8 kernels sum pairs of products in 16 bits, which saturate.
_KERNEL_FEATURES = ("AVX2", "AVX512F", "AVX512BW", "AVX512VNNI", "AVX512_SPR", "ASIMD", "ASIMDDP")


def cpu_features() -> dict[str, Any]:
    """The CPU as this process sees it, for benchmark files: results of int8 kernels depend on it.

    The flags are numpy's own CPUID probe, so they are what the running process gets (under
    an emulator too), not what the host's ``/proc/cpuinfo`` lists.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy moved its private probe: record what is certain
        found = {}
    return {
        "machine": platform.machine(),
        "model": _cpu_model(),
        "features": [name for name in _KERNEL_FEATURES if found.get(name)],
        "vnni": bool(found.get("AVX512VNNI") or found.get("ASIMDDP")),
    }


def machine_record() -> dict[str, Any]:
    """What a benchmark file records of the machine that made it."""
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu_features(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
