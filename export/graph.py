"""Reading an ONNX graph for quantization: which nodes form the decode tail, which can be quantized.

The decode tail is what follows the last learned layer of each output branch: box decoding, DFL
softmax, sigmoid/exp, grid adds, the final Concat/Reshape/Transpose. INT8 there buys no speed
(these ops are cheap) and costs accuracy: one 8-bit range must span box coordinates in pixels
and scores in 0..1 at once. It is found by walking back from every graph output to the first
Conv/ConvTranspose/MatMul/Gemm, so it needs no per-model list.
"""

from __future__ import annotations

from dataclasses import dataclass

# Learned layers: the walk back from the outputs stops at these.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# Ops that only move data around; looked through when asking "what feeds this layer?".
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node: name, op type and position (index in the graph's topological node list)."""

    name: str
    op_type: str
    index: int


class Graph:
    """Producer/consumer maps over a ModelProto's graph (top level only)."""

    def __init__(self, model) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.index = {node.name: i for i, node in enumerate(self.nodes)}
        self.initializers = {init.name for init in model.graph.initializer}
        self.outputs = [out.name for out in model.graph.output]

    def info(self, name: str) -> NodeInfo:
        i = self.index[name]
        return NodeInfo(name, self.nodes[i].op_type, i)

    def _fed_by_softmax(self, node) -> bool:
        """Does ``node``'s data input come (through layout ops only) from a Softmax?

        A learned layer never sees a softmax directly; a fixed weighted sum over one does: the
        integral of a DFL/GFL box head (Ultralytics' DFL is a 1x1 Conv with weights 0..15). That
        layer is decoding, not feature extraction, so the walk goes on through it.
        """
        tensor = node.input[0] if node.input else ""
        for _ in range(8):
            src = self.producer.get(tensor)
            if src is None:
                return False
            if src.op_type == "Softmax":
                return True
            if src.op_type not in LAYOUT_OPS or not src.input:
                return False
            tensor = src.input[0]
        return False

    def float_tail(self) -> list[str]:
        """Names of the nodes between the last learned layer of each output branch and the outputs,
        in graph order."""
        found: set[str] = set()
        stack = list(self.outputs)
        visited: set[str] = set()
        while stack:
            tensor = stack.pop()
            node = self.producer.get(tensor)
            if node is None or node.name in visited:
                continue
            visited.add(node.name)
            if node.op_type in COMPUTE_OPS and not self._fed_by_softmax(node):
                continue
            found.add(node.name)
            stack.extend(name for name in node.input if name and name not in self.initializers)
        return [node.name for node in self.nodes if node.name in found]



def load_graph(path) -> Graph:
    """A :class:`Graph` of the ONNX file at ``path``."""
    from export.deps import require

    onnx = require("onnx")
    return Graph(onnx.load(str(path)))
