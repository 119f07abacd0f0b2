"""Built-in example model for ``fluidml-tvm demo``: a small BERT-style encoder built with onnx.helper.

No torch needed: the graph is written node by node with random (seeded) weights.
Shape: batch 1, sequence 64, hidden 128, 4 heads, FFN 512, 2 layers, vocab 1000, opset 17.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEQ, HIDDEN, HEADS, FFN, LAYERS, VOCAB = 64, 128, 4, 512, 2, 1000
OPSET = 17
INPUT, OUTPUT, WORD_EMB = "input_ids", "last_hidden_state", "embeddings.word"


class _Graph:
    """Accumulates nodes and initializers; every helper returns its output name."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.nodes, self.inits = rng, [], []

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer."""
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], std: float) -> str:
        """Add a float32 N(0, std^2) initializer."""
        return self.const(name, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """Add a node whose single output is called `name`."""
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x: str, fan_in: int, fan_out: int, name: str) -> str:
        """Add MatMul + bias Add (the form transformers export for nn.Linear on 3-D inputs)."""
        # std 1/sqrt(fan_in) keeps activations O(1), so softmax/erf see non-trivial inputs
        w = self.weight(f"{name}.weight", (fan_in, fan_out), fan_in**-0.5)
        b = self.weight(f"{name}.bias", (fan_out,), 0.1)
        return self.op("Add", [self.op("MatMul", [x, w], f"{name}.matmul"), b], name)

    def layer_norm(self, x: str, name: str, out: str | None = None) -> str:
        """Add an opset-17 LayerNormalization over the hidden axis."""
        g = self.const(f"{name}.gamma", (1 + 0.1 * self.rng.standard_normal(HIDDEN)).astype(np.float32))
        b = self.weight(f"{name}.beta", (HIDDEN,), 0.1)
        return self.op("LayerNormalization", [x, g, b], out or name, axis=-1, epsilon=1e-12)


def _attention(g: _Graph, x: str, p: str) -> str:
    """Multi-head self-attention (no mask: every token is valid)."""
    d = HIDDEN // HEADS
    heads = g.const(f"{p}.heads_shape", np.array([1, SEQ, HEADS, d], np.int64))
    q, k, v = (
        g.op("Reshape", [g.linear(x, HIDDEN, HIDDEN, f"{p}.{n}"), heads], f"{p}.{n}.heads") for n in "qkv"
    )
    q = g.op("Transpose", [q], f"{p}.q.t", perm=[0, 2, 1, 3])  # [1, H, S, d]
    k = g.op("Transpose", [k], f"{p}.k.t", perm=[0, 2, 3, 1])  # [1, H, d, S]
    v = g.op("Transpose", [v], f"{p}.v.t", perm=[0, 2, 1, 3])
    scores = g.op("MatMul", [q, k], f"{p}.scores")
    scores = g.op("Mul", [scores, g.const(f"{p}.scale", np.float32(d**-0.5))], f"{p}.scaled")
    probs = g.op("Softmax", [scores], f"{p}.probs", axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v], f"{p}.ctx")], f"{p}.ctx.t", perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.const(f"{p}.merge_shape", np.array([1, SEQ, HIDDEN], np.int64))], f"{p}.merged")
    return g.linear(ctx, HIDDEN, HIDDEN, f"{p}.out")


def _gelu(g: _Graph, x: str, p: str) -> str:
    """GELU in the exact Erf form BERT exports: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    e = g.op("Erf", [g.op("Div", [x, g.const(f"{p}.sqrt2", np.float32(np.sqrt(2)))], f"{p}.div")], f"{p}.erf")
    e = g.op("Add", [e, g.const(f"{p}.one", np.float32(1))], f"{p}.erf1")
    return g.op("Mul", [g.op("Mul", [x, e], f"{p}.xe"), g.const(f"{p}.half", np.float32(0.5))], p)


def build_example_model(seed: int = 0) -> onnx.ModelProto:
    """Return a 2-layer BERT-style encoder (seq 64, hidden 128) as an ONNX model with seeded random weights."""
    g = _Graph(np.random.default_rng(seed))
    x = g.op("Gather", [g.weight(WORD_EMB, (VOCAB, HIDDEN), 1.0), INPUT], "embeddings.tokens", axis=0)
    # static sequence: Gather(position_table, arange(SEQ)) is just the table, so add it directly
    x = g.op("Add", [x, g.weight("embeddings.position", (SEQ, HIDDEN), 1.0)], "embeddings.sum")
    x = g.layer_norm(x, "embeddings.ln")
    for i in range(LAYERS):
        p = f"layer{i}"
        x = g.layer_norm(g.op("Add", [x, _attention(g, x, f"{p}.attn")], f"{p}.attn.res"), f"{p}.attn.ln")
        h = _gelu(g, g.linear(x, HIDDEN, FFN, f"{p}.ffn.up"), f"{p}.ffn.gelu")
        h = g.linear(h, FFN, HIDDEN, f"{p}.ffn.down")
        x = g.layer_norm(g.op("Add", [x, h], f"{p}.ffn.res"), f"{p}.ffn.ln", OUTPUT if i == LAYERS - 1 else None)
    graph = helper.make_graph(
        g.nodes, "fluidml_example_encoder",
        [helper.make_tensor_value_info(INPUT, TensorProto.INT64, [1, SEQ])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, SEQ, HIDDEN])],
        g.inits,
    )
    # ir_version 8 keeps the file loadable by older onnxruntime releases
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8,
                              producer_name="fluidml-tvm")
    onnx.checker.check_model(model)
    return model


def example_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Return random in-vocabulary token ids for every int64 input of `model`."""
    vocab = next((t.dims[0] for t in model.graph.initializer if t.name == WORD_EMB), VOCAB)
    rng = np.random.default_rng(seed)
    return {
        i.name: rng.integers(0, vocab, [d.dim_value for d in i.type.tensor_type.shape.dim], dtype=np.int64)
        for i in model.graph.input
        if i.type.tensor_type.elem_type == TensorProto.INT64
    }
