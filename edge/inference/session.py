"""An onnxruntime session set up for a small CPU, with the model card checked against the graph."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.errors import ModelError
from edge.inference.card import ModelCard, read_card
from edge.inference.cpu import u8s8_saturates

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """Cores this process may use (affinity-aware), at most 4: more rarely helps a small model."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def session_options(*, threads: int | None = None, spin: bool = True, fused: bool = True) -> ort.SessionOptions:
    """Session options for a small CPU: sequential, full graph optimisation, bounded threads.

    ``spin=False`` stops idle intra-op threads from busy-waiting, which matters when image
    decoding runs on the same few cores in parallel with inference. ``fused=False`` turns graph
    optimisation off, so an INT8 (QDQ) file runs as written: each operator in float between its
    DequantizeLinear and QuantizeLinear instead of onnxruntime's fused integer kernels (the export
    measures an INT8 file both ways, issue 14).
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if u8s8_saturates():
        # On an x86 CPU without VNNI, onnxruntime's u8 x s8 kernels add pairs of products in
        # saturating 16-bit lanes (VPMADDUBSW): an INT8 file made for an ARM device (u8s8) computes
        # something else there (FastestDet's outputs off by up to 5.3). This option converts such
        # weights to u8 at load time so the products are exact, as on ARM and on x86 with VNNI:
        # under qemu-x86_64 -cpu Haswell, FastestDet's outputs then equal a VNNI machine's within
        # 2.4e-7. Not set elsewhere: on a VNNI machine it changes no output but costs 35 % of
        # YOLOX-Nano's INT8 speed (8.5 -> 11.5 ms), as it converts there too.
        opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3  # onnxruntime's per-initializer warnings are noise to a user
    # The memory-pattern planner pre-allocates for the largest run seen (~23 MB more peak RSS on a
    # 640-px YOLO) and buys no measurable speed for fixed-size CPU inputs.
    opts.enable_mem_pattern = False
    # The CPU arena keeps its high-water mark resident for the life of the session: 10 MB of the
    # daemon's RSS with YOLOX-Nano on 1280x720 frames, for no measurable latency difference
    # (21-26 ms either way, benchmarks/daemon.py on this machine).
    opts.enable_cpu_mem_arena = False
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts


class OnnxModel:
    """An ONNX file, its card, and a CPU session; a context manager."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None, spin: bool = True,
                 fused: bool = True) -> None:
        options = session_options(threads=threads, spin=spin, fused=fused)  # bad threads: ValueError
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        self.card: ModelCard = read_card(self.path)
        started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"],
            )
        except Exception as err:  # onnxruntime raises its own untyped errors for bad graphs
            raise ModelError(f"onnxruntime cannot load {self.path}: {err}") from err
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one image input, the graph has {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._check_input(inputs[0].shape)
        logger.info(
            "loaded %s (%s, %s, %dx%d) in %.0f ms", self.path.name, self.card.task, self.card.decoder.name,
            *self.card.preprocess.input_size, (time.perf_counter() - started) * 1000,
        )

    def _check_input(self, shape: list) -> None:
        if len(shape) != 4:
            raise ModelError(f"{self.path}: image input must be 4-D, the graph's is {shape}")
        pre = self.card.preprocess
        if pre.layout == "NCHW":
            channels, height, width = shape[1], shape[2], shape[3]
        else:
            height, width, channels = shape[1], shape[2], shape[3]
        if isinstance(channels, int) and channels != 3:
            raise ModelError(f"{self.path}: input has {channels} channels for layout {pre.layout}; expected 3")
        want_w, want_h = pre.input_size
        if (isinstance(width, int) and width != want_w) or (isinstance(height, int) and height != want_h):
            raise ModelError(
                f"{self.path}: the card says input size {want_w}x{want_h} but the graph takes {width}x{height}; "
                f"re-stamp with --input-size {width}x{height}"
            )

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.session.get_inputs()[0].shape[0], int)

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on one input tensor; outputs by name."""
        results = self.session.run(None, {self.input_name: tensor})
        return dict(zip(self.output_names, results))

    def zeros(self, batch: int = 1) -> np.ndarray:
        width, height = self.card.preprocess.input_size
        shape = (batch, 3, height, width) if self.card.preprocess.layout == "NCHW" else (batch, height, width, 3)
        return np.zeros(shape, dtype=np.float32)

    def close(self) -> None:
        # onnxruntime frees the session when the last reference goes; drop ours deterministically.
        self.__dict__.pop("session", None)

    def __enter__(self) -> OnnxModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
