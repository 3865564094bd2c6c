"""onnxruntime sessions, configured the same way for every network AgeLens runs."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from agelens.errors import ModelError


def open_session(model_path: Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with full graph optimisation; ``run`` on it is thread-safe.

    One intra-op pool of up to 4 threads: the networks are small, and more threads
    mostly add synchronisation cost.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{model_path}: not a loadable ONNX model ({error})") from error
