"""Accuracy-driven mixed precision: find the quantizations that hurt most and keep them in float.

Ranking. Each quantized activation tensor and each quantized weight is one *unit*. A unit's
sensitivity is the model's output SQNR (vs FP32, dB, lower is worse) when that unit alone is
quantized and everything else stays float. Units are measured in float graphs in which each
unit's fake quantization (the INT8 model's own scales and zero points, or its dequantized weights)
is switched on or off by a gate input, a few dozen units per graph, so the ranking costs one
inference per unit and photo, not one quantization.

Why not rank by each tensor's own rounding error (``qdq_loss_debug``'s local SQNR)? Because the
damage is in what the network does with the noise: on YOLOX-Nano the stem's SiLU output rounds to
a decent 24 dB, but the depthwise conv after it amplifies that noise until the whole model's output
is at 7 dB, and a tensor with a 41 dB local SQNR is the fifth most harmful. End-to-end measurement
ranks those early layers first by itself.

Keeping a unit in float. A tensor stays float only if no node around it asks for it to be
quantized, so a unit keeps in float the tensor's producer and all its consumers (a weight: its
layer and that layer's consumers). Excluding a lone Conv is not enough: onnxruntime's optimizer
re-quantizes a float Conv that sits between a DequantizeLinear and a QuantizeLinear
(WeightBiasQuantization, per tensor): keeping YOLOX-Nano's first two convs in float that way took
its mAP@0.5 from 47 (plain INT8) to 0.2.

Search. Keep the k most harmful units in float for k = 1, 2, 4, 8 ... (re-quantizing from the one
calibration each time and measuring the real drop and its bound, :mod:`export.objective`) until the
bound fits the budget, then bisect k
down to the smallest prefix that fits: units beyond it are put back to INT8.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from export.deps import require
from export.graph import Graph
from export.objective import Score

logger = logging.getLogger(__name__)

GATES = "wildedge_gates"
MAX_SQNR_DB = 100.0
CHUNK = 32  # gates per gated graph (see rank_units)


@dataclass(frozen=True, slots=True)
class Unit:
    """One quantization that can be undone: an activation tensor or a layer's weights."""

    name: str  # the tensor (activation) or the layer (weights)
    kind: str  # "activation" or "weights"
    nodes: tuple[str, ...]  # the nodes kept in float to undo it
    sqnr_db: float  # model output SQNR with only this unit quantized (lower = more harmful)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nodes": list(self.nodes), "sqnr_db": round(self.sqnr_db, 2)}


# -- the gated float model -------------------------------------------------------------------
def _initializers(model) -> dict[str, Any]:
    return {init.name: init for init in model.graph.initializer}


def _activation_qparams(int8_model) -> dict[str, tuple[Any, Any]]:
    """Tensor -> (scale, zero point) initializers of the QuantizeLinear that quantizes it."""
    inits = _initializers(int8_model)
    found = {}
    for node in int8_model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) >= 3 and node.input[0] not in inits:
            if node.input[1] in inits and node.input[2] in inits:
                found.setdefault(node.input[0], (inits[node.input[1]], inits[node.input[2]]))
    return found


def _dequantized_weights(float_model, int8_model) -> dict[str, np.ndarray]:
    """Float weight name -> its INT8 value dequantized, for every quantized weight.

    Computed here rather than with ``qdq_loss_debug.create_weight_matching``, whose dequantization
    subtracts uint8 zero points in uint8 and wraps around.
    """
    from onnx import numpy_helper

    floats = _initializers(float_model)
    inits = _initializers(int8_model)
    found = {}
    for node in int8_model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        base = node.input[0].removesuffix("_quantized")
        if base not in floats or node.input[1] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zero = (numpy_helper.to_array(inits[node.input[2]]).astype(np.int64)
                if len(node.input) > 2 and node.input[2] in inits else np.zeros_like(scale, dtype=np.int64))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = -1
        weight = numpy_helper.to_array(floats[base])
        dequantized = (q - zero.reshape(shape)) * scale.reshape(shape)
        if dequantized.shape == weight.shape:
            found[base] = dequantized.astype(weight.dtype)
    return found


@dataclass(frozen=True, slots=True)
class Gate:
    """What one gate switches: an activation's fake quantization, or a layer's dequantized weights."""

    kind: str  # "activation" or "weights"
    name: str  # the tensor, or the layer(s) using the weights (comma-separated)
    qparams: tuple[Any, Any] | None = None  # activation: (scale, zero point) initializers
    weights: tuple[tuple[str, np.ndarray], ...] = ()  # weights: (float initializer, dequantized value)


def list_gates(float_model, int8_model, graph: Graph) -> list[Gate]:
    """Every quantization of ``int8_model`` that can be switched on alone in ``float_model``."""
    produced = {out for node in float_model.graph.node for out in node.output}
    produced |= {i.name for i in float_model.graph.input}
    float_inits = {init.name for init in float_model.graph.initializer}
    gates = [Gate("activation", t, qparams=p) for t, p in _activation_qparams(int8_model).items()
             if t in produced and t not in float_inits]
    # One gate per layer: its weight and bias are quantized (and undone) together.
    layers: dict[str, list[tuple[str, np.ndarray]]] = {}
    for weight, value in _dequantized_weights(float_model, int8_model).items():
        users = ",".join(node.name for node in graph.consumers.get(weight, [])) or weight
        layers.setdefault(users, []).append((weight, value))
    gates += [Gate("weights", users, weights=tuple(pairs)) for users, pairs in layers.items()]
    return gates


def build_gated(float_model, gates: Sequence[Gate]):
    """A copy of ``float_model`` in which ``gates[k]`` is switched on by the input ``GATES[k]``."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    g = model.graph
    chains: dict[str, list] = {}  # tensor -> the gate nodes to insert right after it is produced
    rename: dict[str, str] = {}
    weight_nodes = []
    for k, gate in enumerate(gates):
        idx = f"wg_i{k}"
        g.initializer.append(numpy_helper.from_array(np.array(k, dtype=np.int64), idx))
        if gate.kind == "activation":
            scale, zero = gate.qparams
            tensor, s, z, out = gate.name, f"wg_s{k}", f"wg_z{k}", f"{gate.name}_wg"
            g.initializer.extend([numpy_helper.from_array(numpy_helper.to_array(scale), s),
                                  numpy_helper.from_array(numpy_helper.to_array(zero), z)])
            chains[tensor] = [
                helper.make_node("QuantizeLinear", [tensor, s, z], [f"{out}_q"], name=f"{out}_Q"),
                helper.make_node("DequantizeLinear", [f"{out}_q", s, z], [f"{out}_dq"], name=f"{out}_DQ"),
                helper.make_node("Gather", [GATES, idx], [f"{out}_gate"], axis=0, name=f"{out}_Gate"),
                helper.make_node("Where", [f"{out}_gate", f"{out}_dq", tensor], [out], name=f"{out}_Where"),
            ]
            rename[tensor] = out
            continue
        weight_nodes.append(helper.make_node("Gather", [GATES, idx], [f"wg_gate{k}"], axis=0, name=f"wg_Gate{k}"))
        for weight, value in gate.weights:
            dq, out = f"{weight}_wg_dq", f"{weight}_wg"
            g.initializer.append(numpy_helper.from_array(value, dq))
            weight_nodes.append(helper.make_node("Where", [f"wg_gate{k}", dq, weight], [out], name=f"{out}_Where"))
            rename[weight] = out
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(weight_nodes)
    for inp in g.input:
        g.node.extend(chains.get(inp.name, []))
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        g.node.append(node)
        for out in node.output:
            g.node.extend(chains.get(out, []))
    for out in g.output:
        if out.name in chains:
            out.name = rename[out.name]
    g.input.append(helper.make_tensor_value_info(GATES, TensorProto.BOOL, [len(gates)]))
    return model


def _unit_nodes(kind: str, name: str, graph: Graph) -> set[str]:
    """The nodes to keep in float to undo one unit (see the module docstring)."""
    if kind == "activation":
        nodes = {c.name for c in graph.consumers.get(name, [])}
        if name in graph.producer:
            nodes.add(graph.producer[name].name)
        return nodes
    nodes = set()
    for layer in name.split(","):
        if layer not in graph.index:
            continue
        nodes.add(layer)
        for out in graph.nodes[graph.index[layer]].output:
            nodes |= {c.name for c in graph.consumers.get(out, [])}
    return nodes


def _sqnr(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]]) -> float:
    """Output SQNR in dB, per graph output over all photos, averaged over the outputs."""
    debug = require("onnxruntime.quantization.qdq_loss_debug")
    values = []
    for j in range(len(reference[0])):
        ref = [r[j].ravel() for r in reference]
        out = [o[j].ravel() for o in outputs]
        if not any(np.any(r) for r in ref):
            continue
        values.append(min(MAX_SQNR_DB, debug.compute_signal_to_quantization_noice_ratio(ref, out)))
    return float(np.mean(values)) if values else MAX_SQNR_DB


def rank_units(
    prepared: Path,
    int8: Path,
    tensors: Sequence[np.ndarray],
    graph: Graph,
    *,
    skip: set[str] = frozenset(),
    threads: int | None = None,
    max_seconds: float | None = None,
    chunk: int = CHUNK,
) -> list[Unit]:
    """Every unit of ``int8`` with its output SQNR when quantized alone, most harmful first.

    Units whose nodes are all in ``skip`` (already float) are left out. The gates go into the float
    graph ``chunk`` at a time: every gate costs each run a Where and a copy, so a graph holding all
    of them runs several times slower than one holding a few dozen. When ``max_seconds`` runs out,
    the units not measured yet are ranked last, in graph order.
    """
    onnx = require("onnx")
    import onnxruntime as ort

    from edge.inference.session import session_options

    if not tensors:
        raise ValueError("rank_units needs at least one input tensor")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    started = time.perf_counter()
    float_model = onnx.load(str(prepared))
    gates = list_gates(float_model, onnx.load(str(int8)), graph)
    nodes = [_unit_nodes(gate.kind, gate.name, graph) for gate in gates]
    todo = [k for k, unit_nodes in enumerate(nodes) if unit_nodes - skip]
    options = session_options(threads=threads)
    scores: dict[int, float] = {}
    reference = None
    with TemporaryDirectory(prefix="wildedge-sensitivity-") as tmp:
        for first in range(0, len(todo), chunk):
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                logger.warning("sensitivity: time cap of %.0f s reached after %d of %d units", max_seconds,
                               len(scores), len(todo))
                break
            part = todo[first:first + chunk]
            path = Path(tmp) / "gated.onnx"
            onnx.save(build_gated(float_model, [gates[k] for k in part]), str(path))
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
            image_input = next(i.name for i in session.get_inputs() if i.name != GATES)

            def run(on: int | None) -> list[list[np.ndarray]]:
                switch = np.zeros(len(part), bool)
                if on is not None:
                    switch[on] = True
                return [session.run(None, {image_input: t, GATES: switch}) for t in tensors]

            if reference is None:
                reference = run(None)
            for j, k in enumerate(part):
                scores[k] = _sqnr(reference, run(j))
    order = {name: i for i, name in enumerate(graph.index)}
    ranked = sorted(todo, key=lambda k: (scores.get(k, math.inf), k))
    out = [Unit(gates[k].name, gates[k].kind, tuple(sorted(nodes[k] - skip, key=order.get)),
                scores.get(k, math.inf)) for k in ranked]
    logger.info("sensitivity: %d units on %d photos in %.1f s; worst: %s", len(out), len(tensors),
                time.perf_counter() - started,
                ", ".join(f"{u.name} ({u.sqnr_db:.1f} dB)" for u in out[:5]))
    return out


# -- the search ----------------------------------------------------------------------------------
@dataclass
class Step:
    """One measured candidate: the ``k`` most harmful units kept in float."""

    units: int
    nodes: int
    score: Score
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"units": self.units, "nodes": self.nodes, **self.score.to_dict(), "seconds": round(self.seconds, 2)}


@dataclass
class SearchResult:
    """The chosen prefix of the ranking and how the search got there."""

    units: list[Unit]
    nodes: list[str]
    score: Score | None
    path: Path | None
    reached: bool
    stopped: str  # "budget" (within budget), "exhausted" (every unit tried) or "time"
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"reached": self.reached, "stopped": self.stopped, "seconds": round(self.seconds, 2),
                "units": [u.to_dict() for u in self.units], "nodes": self.nodes,
                "score": self.score.to_dict() if self.score else None,
                "steps": [s.to_dict() for s in self.steps]}


def search(
    units: Sequence[Unit],
    *,
    quantize: Callable[[set[str], str], Path],
    objective: Callable[[Path], Score],
    budget: float,
    max_seconds: float,
) -> SearchResult:
    """Smallest prefix of ``units`` whose float nodes bring the drop's bound (``Score.bound``) within ``budget``.

    ``quantize(nodes, tag)`` writes an INT8 model with ``nodes`` also in float and returns its path;
    ``objective(path)`` measures it. Past ``max_seconds`` the search stops with the best candidate
    measured so far.
    """
    started = time.perf_counter()
    steps: list[Step] = []
    measured: dict[int, tuple[Score, Path, list[str]]] = {}

    def prefix(k: int) -> list[str]:
        order: dict[str, None] = {}
        for unit in units[:k]:
            order.update(dict.fromkeys(unit.nodes))
        return list(order)

    def measure(k: int) -> Score:
        t = time.perf_counter()
        nodes = prefix(k)
        path = quantize(set(nodes), f"k{k}")
        score = objective(path)
        measured[k] = (score, path, nodes)
        steps.append(Step(k, len(nodes), score, time.perf_counter() - t))
        logger.info("search: %d units (%d nodes) in float: %s %.2f, drop %.2f, bound %.2f", k, len(nodes),
                    score.metric, score.int8, score.drop, score.bound)
        return score

    def out_of_time() -> bool:
        return time.perf_counter() - started > max_seconds

    fail, passed, stopped = 0, None, "exhausted"
    k = 1
    while k <= len(units):
        if measure(k).bound <= budget:
            passed = k
            break
        fail = k
        if out_of_time():
            stopped = "time"
            break
        k = len(units) if k < len(units) <= 2 * k else 2 * k
    if passed is not None:
        stopped = "budget"
        while passed - fail > 1 and not out_of_time():
            mid = (passed + fail) // 2
            if measure(mid).bound <= budget:
                passed = mid
            else:
                fail = mid
    if passed is not None:
        chosen = passed
    elif measured:
        chosen = min(measured, key=lambda j: (measured[j][0].bound, j))
    else:
        return SearchResult([], [], None, None, False, stopped, steps, time.perf_counter() - started)
    score, path, nodes = measured[chosen]
    return SearchResult(list(units[:chosen]), nodes, score, path, passed is not None, stopped, steps,
                        time.perf_counter() - started)
